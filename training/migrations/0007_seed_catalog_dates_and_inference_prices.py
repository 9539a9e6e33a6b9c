import datetime
from decimal import Decimal

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

OPENAI_SOURCE = (
    "OpenAI fine-tuning pricing and deprecations pages, as read on 2026-11-28: training priced "
    "per million trained tokens, fine-tuned models' input and output per million tokens; new "
    "self-serve fine-tuning jobs stop on 2027-01-06 (deprecation). No shutdown date announced; "
    "a fine-tuned model lives only as long as its base model."
)
# (training, input, output) in USD per million tokens for the fine-tuned model.
OPENAI_PRICES = {
    "gpt-4o-mini-2024-07-18": (Decimal("3.00"), Decimal("0.30"), Decimal("1.20")),
    "gpt-4.1-mini-2025-04-14": (Decimal("5.00"), Decimal("0.80"), Decimal("3.20")),
}


def seed(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    base_model = apps.get_model("training", "BaseModel")
    for key, (training, input_price, output_price) in OPENAI_PRICES.items():
        # 2027-01-06 ends new training jobs; the earlier seed had it as the shutdown date.
        base_model.objects.filter(key=key).update(
            deprecated_at=datetime.date(2027, 1, 6),
            retires_at=None,
            training_usd_per_million_tokens=training,
            input_usd_per_million_tokens=input_price,
            output_usd_per_million_tokens=output_price,
            source=OPENAI_SOURCE,
        )


def unseed(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    apps.get_model("training", "BaseModel").objects.filter(key__in=OPENAI_PRICES).update(
        deprecated_at=None, retires_at=datetime.date(2027, 1, 6)
    )


class Migration(migrations.Migration):
    dependencies = [("training", "0006_submission_key_unique")]
    operations = [migrations.RunPython(seed, unseed)]
