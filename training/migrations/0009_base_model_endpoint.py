import re
from typing import Any

from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.models.deletion import PROTECT

# What an endpoint's name (a slug) may not hold; a server's model id may ("org/model:tag").
NOT_SLUG = re.compile(r"[^-a-zA-Z0-9_]+")


def bind_endpoints(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Hosted catalog rows go to the default "openai" endpoint; a row whose admin had given it
    its own URL gets an endpoint for that URL with the same key as before."""
    base_model = apps.get_model("training", "BaseModel")
    endpoint = apps.get_model("catalog", "Endpoint")
    default = endpoint.objects.filter(name="openai").first()
    for row in base_model.objects.filter(provider="openai").order_by("pk"):
        url = row.api_base_url.strip()
        row.endpoint = own_endpoint(endpoint, key=row.key, url=url) if url else default
        row.save(update_fields=["endpoint"])


def own_endpoint(endpoint: Any, *, key: str, url: str) -> Any:
    """The endpoint for ``url`` with the OpenAI key: rows that shared a server share it (same
    URL, same key). A new one is named after the first row's model id, as a slug, made unique:
    two ids may slug alike yet live on different servers."""
    same = endpoint.objects.filter(
        kind="openai_compatible", base_url=url, secret_env="OPENAI_API_KEY"
    ).first()
    if same is not None:
        return same
    stem = NOT_SLUG.sub("-", key).strip("-")[:80] or "hosted"
    name, number = f"{stem}-endpoint", 2
    while endpoint.objects.filter(name=name).exists():
        name, number = f"{stem}-endpoint-{number}", number + 1
    return endpoint.objects.create(
        name=name, kind="openai_compatible", base_url=url, secret_env="OPENAI_API_KEY"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0002_default_endpoints"),
        ("training", "0008_job_compute_seconds"),
    ]

    operations = [
        migrations.AddField(
            model_name="basemodel",
            name="endpoint",
            field=models.ForeignKey(
                blank=True,
                help_text="Hosted models: the registered endpoint that trains and serves them.",
                null=True,
                on_delete=PROTECT,
                related_name="base_models",
                to="catalog.endpoint",
            ),
        ),
        migrations.RunPython(bind_endpoints, migrations.RunPython.noop),
        migrations.RemoveField(model_name="basemodel", name="api_base_url"),
    ]
