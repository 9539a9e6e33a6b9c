from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.models.deletion import PROTECT


def bind_endpoints(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Hosted catalog rows go to the default "openai" endpoint; a row whose admin had given it
    its own URL gets an endpoint of its own with that URL and the same key as before."""
    base_model = apps.get_model("training", "BaseModel")
    endpoint = apps.get_model("catalog", "Endpoint")
    default = endpoint.objects.filter(name="openai").first()
    for row in base_model.objects.filter(provider="openai"):
        if not row.api_base_url:
            row.endpoint = default
        else:
            row.endpoint, _ = endpoint.objects.get_or_create(
                name=f"{row.key}-endpoint"[:100].replace(".", "-").replace(":", "-"),
                defaults={
                    "kind": "openai_compatible",
                    "base_url": row.api_base_url,
                    "secret_env": "OPENAI_API_KEY",
                },
            )
        row.save(update_fields=["endpoint"])


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
