"""The base-model catalog moved to the catalog app (catalog 0003, which keeps the table
``training_basemodel``). Jobs point there, and training forgets its own copy in Django's state
only: dropping the table here would drop the catalog. Last, after every other app's foreign key
has moved (evaluation 0006, registry 0004), so no state refers to a model that is gone."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0003_basemodel"),
        ("evaluation", "0006_candidate_base_model_from_catalog"),
        ("registry", "0004_model_version_base_model_from_catalog"),
        ("training", "0010_job_resumed_after_attempts"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="trainingjob",
                    name="base_model",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="jobs",
                        to="catalog.basemodel",
                    ),
                ),
                migrations.DeleteModel(name="BaseModel"),
            ],
        ),
    ]
