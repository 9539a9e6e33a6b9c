"""Model versions' base model now lives in the catalog app (catalog 0003). The column and its
constraint already point at the same table, so only Django's state changes."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0003_basemodel"),
        ("registry", "0003_alias_change_evidence"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="modelversion",
                    name="base_model",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="catalog.basemodel",
                    ),
                ),
            ],
        ),
    ]
