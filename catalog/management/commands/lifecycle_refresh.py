"""``python manage.py lifecycle_refresh``: read the providers' model lists for the base models'
shutdown dates now, as the daily task does (``catalog.lifecycle``)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from catalog.lifecycle import LifecycleRefreshed, lifecycle_refresh


class Command(BaseCommand):
    help = (
        "Ask every enabled OpenAI(-compatible) endpoint that a base model names for its model "
        "list, and set each listed base model's shutdown date (retires_at) to the one its "
        "provider announces; dates nobody announced are left as they are."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        done = lifecycle_refresh()
        if not done:
            self.stdout.write("No enabled endpoint names a base model: nothing to check.")
        for endpoint in done:
            if endpoint.error:
                self.stderr.write(endpoint.error)
            else:
                self.stdout.write(_summary(endpoint))
        failed = [endpoint.endpoint for endpoint in done if endpoint.error]
        if failed:
            raise CommandError(f"Not checked: {', '.join(failed)}.")


def _summary(done: LifecycleRefreshed) -> str:
    changed = ", ".join(done.changed) or "none"
    said = f"{done.endpoint}: {len(done.checked)} base models listed; dates changed: {changed}."
    if done.unlisted:
        said += f" Not listed (left as they were): {', '.join(done.unlisted)}."
    return said
