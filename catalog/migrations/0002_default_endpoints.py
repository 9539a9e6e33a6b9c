from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

# Hosted evaluation and fine-tuning work out of the box: the providers' own APIs (or the
# operator's OPENAI_BASE_URL / ANTHROPIC_BASE_URL), with the variables operators already set.
DEFAULTS = [
    {"name": "openai", "kind": "openai", "secret_env": "OPENAI_API_KEY"},
    {"name": "anthropic", "kind": "anthropic", "secret_env": "ANTHROPIC_API_KEY"},
]


def create_defaults(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    endpoint = apps.get_model("catalog", "Endpoint")
    for row in DEFAULTS:
        endpoint.objects.get_or_create(name=row["name"], defaults=row)


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [migrations.RunPython(create_defaults, migrations.RunPython.noop)]
