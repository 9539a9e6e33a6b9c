import django.db.models.deletion
from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

DEFAULT_ENDPOINT = {"openai_compatible": "openai", "anthropic": "anthropic"}


def bind_endpoints(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Stored hosted candidates and judges that used the provider's own URL and key point at
    the default endpoint of their kind (a blank variable meant the provider's own, and so does
    naming it). Those that named a URL or another variable are left without one: only an admin
    may bind a key to a URL, so the worker refuses to resume them until someone creates the
    evaluation again with a registered endpoint."""
    endpoint = apps.get_model("catalog", "Endpoint")
    candidate = apps.get_model("evaluation", "Candidate")
    run = apps.get_model("evaluation", "EvalRun")
    defaults = {kind: endpoint.objects.filter(name=name).first() for kind, name in DEFAULT_ENDPOINT.items()}
    for kind, default in defaults.items():
        providers_own = ["", default.secret_env] if default is not None else [""]
        candidate.objects.filter(
            kind=kind, api_base_url="", api_key_env__in=providers_own
        ).update(endpoint=default)
        run.objects.filter(
            judge_kind=kind, judge_base_url="", judge_key_env__in=providers_own
        ).update(judge_endpoint=default)


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0002_default_endpoints"),
        ("evaluation", "0003_candidate_constrained"),
    ]

    operations = [
        migrations.AddField(
            model_name="candidate",
            name="endpoint",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="catalog.endpoint",
            ),
        ),
        migrations.AddField(
            model_name="evalrun",
            name="judge_endpoint",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="catalog.endpoint",
            ),
        ),
        migrations.RunPython(bind_endpoints, migrations.RunPython.noop),
        migrations.RemoveField(model_name="candidate", name="api_base_url"),
        migrations.RemoveField(model_name="candidate", name="api_key_env"),
        migrations.RemoveField(model_name="evalrun", name="judge_base_url"),
        migrations.RemoveField(model_name="evalrun", name="judge_key_env"),
    ]
