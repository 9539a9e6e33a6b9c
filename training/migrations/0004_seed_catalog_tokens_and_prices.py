import datetime
from decimal import Decimal

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

# OpenAI rows exist so datasets can be sized and priced for them (tokenizer, context window,
# training price); they stay inactive until the OpenAI training adapter lands.
OPENAI_SOURCE = (
    "OpenAI fine-tuning pricing and deprecations pages, as read on 2026-11-28: training priced "
    "per million trained tokens; new self-serve fine-tuning jobs stop on 2027-01-06."
)
OPENAI_ROWS = [
    {
        "key": "gpt-4o-mini-2024-07-18",
        "display_name": "GPT-4o mini (2024-07-18)",
        "context_window": 65_536,
        "training_usd_per_million_tokens": Decimal("3.00"),
    },
    {
        "key": "gpt-4.1-mini-2025-04-14",
        "display_name": "GPT-4.1 mini (2025-04-14)",
        "context_window": 65_536,
        "training_usd_per_million_tokens": Decimal("5.00"),
    },
]


def seed(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    base_model = apps.get_model("training", "BaseModel")
    # SmolLM2 was trained with an 8,192-token context.
    base_model.objects.filter(key="smollm2-135m-instruct").update(context_window=8192)
    for row in OPENAI_ROWS:
        base_model.objects.update_or_create(
            key=row["key"],
            defaults={
                **row,
                "provider": "openai",
                "tokenizer": "o200k_base",
                "source": OPENAI_SOURCE,
                "retires_at": datetime.date(2027, 1, 6),
                "is_active": False,
            },
        )


def unseed(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    keys = [row["key"] for row in OPENAI_ROWS]
    apps.get_model("training", "BaseModel").objects.filter(key__in=keys).delete()


class Migration(migrations.Migration):
    dependencies = [("training", "0003_catalog_tokens_and_prices")]
    operations = [migrations.RunPython(seed, unseed)]
