"""The base-model catalog moves here from the training app (issue 14: datasets and training
both read it, so it belongs below both). Only Django's idea of the model moves: the table keeps
its name (``db_table = "training_basemodel"``), so no row, key or constraint changes and no
table is locked. training 0010 then forgets its own copy, after evaluation 0006 and registry
0004 point their foreign keys here. The content type moves with the model so that admin
permissions and history granted on it still apply.
"""

import django.db.models.deletion
from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def _move_content_type(apps: Apps, *, source: str, target: str) -> None:
    content_type = apps.get_model("contenttypes", "ContentType")
    if content_type.objects.filter(app_label=target, model="basemodel").exists():
        return
    content_type.objects.filter(app_label=source, model="basemodel").update(app_label=target)


def content_type_to_catalog(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _move_content_type(apps, source="training", target="catalog")


def content_type_to_training(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _move_content_type(apps, source="catalog", target="training")


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0002_default_endpoints"),
        ("contenttypes", "0002_remove_content_type_name"),
        # The last migration that changed the table or its rows while training owned it.
        ("training", "0009_base_model_endpoint"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="BaseModel",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("key", models.CharField(max_length=100, unique=True)),
                        ("display_name", models.CharField(max_length=200)),
                        (
                            "provider",
                            models.CharField(
                                choices=[
                                    ("local", "Local LoRA (transformers + peft)"),
                                    ("openai", "OpenAI fine-tuning API"),
                                ],
                                max_length=20,
                            ),
                        ),
                        ("parameter_count", models.BigIntegerField(blank=True, null=True)),
                        (
                            "source",
                            models.TextField(
                                blank=True,
                                help_text="Where the weights or the prices and dates come from.",
                            ),
                        ),
                        ("weights_path", models.CharField(blank=True, max_length=500)),
                        (
                            "deprecated_at",
                            models.DateField(
                                blank=True,
                                help_text="From this day no new fine-tuning jobs are accepted.",
                                null=True,
                            ),
                        ),
                        (
                            "retires_at",
                            models.DateField(
                                blank=True,
                                help_text="Shutdown: the model, and every model fine-tuned from "
                                "it, stops serving.",
                                null=True,
                            ),
                        ),
                        ("is_active", models.BooleanField(default=True)),
                        (
                            "context_window",
                            models.PositiveIntegerField(
                                blank=True,
                                help_text="Tokens per example the model accepts in training.",
                                null=True,
                            ),
                        ),
                        ("tokenizer", models.CharField(blank=True, max_length=50)),
                        (
                            "training_usd_per_million_tokens",
                            models.DecimalField(
                                blank=True, decimal_places=4, max_digits=10, null=True
                            ),
                        ),
                        (
                            "input_usd_per_million_tokens",
                            models.DecimalField(
                                blank=True, decimal_places=4, max_digits=10, null=True
                            ),
                        ),
                        (
                            "output_usd_per_million_tokens",
                            models.DecimalField(
                                blank=True, decimal_places=4, max_digits=10, null=True
                            ),
                        ),
                        (
                            "endpoint",
                            models.ForeignKey(
                                blank=True,
                                help_text="Hosted models: the registered endpoint that trains "
                                "and serves them.",
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="base_models",
                                to="catalog.endpoint",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_basemodel",
                        "ordering": ["parameter_count", "key"],
                    },
                ),
            ],
        ),
        migrations.RunPython(content_type_to_catalog, content_type_to_training),
    ]
