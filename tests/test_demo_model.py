"""`make run` leaves the demo a production model (`manage.py load_demo_model`: a short LoRA
trained by the real runner, registered and promoted) and an application key can be made from
the command line (`manage.py app_key_create`), so the README's calls have something to call."""

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.models import BaseModel
from ftportal.models import Project
from registry.models import AliasChange
from registry.selectors import production_version
from serving.models import ApplicationKey
from serving.services import application_key_authenticate
from training.models import JobStatus, TrainingJob

pytestmark = pytest.mark.django_db


def test_load_demo_model_trains_registers_and_promotes_a_short_lora_once(
    base_model: BaseModel,
) -> None:
    call_command("load_demo")
    call_command("load_demo_model", steps=1, stdout=StringIO())

    [job] = TrainingJob.objects.all()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.hyperparameters["max_steps"] == 1
    version = production_version(job.model_versions.get().registered_model)
    assert version is not None and version.training_job == job
    assert Path(version.adapter_dir, "adapter_config.json").is_file()
    [promotion] = AliasChange.objects.filter(to_version=version)
    assert promotion.overridden and "not evaluated" in promotion.reason

    again = StringIO()
    call_command("load_demo_model", steps=1, stdout=again)
    assert "already present" in again.getvalue()
    assert TrainingJob.objects.count() == 1


def test_app_key_create_prints_a_key_once_for_a_lead_and_refuses_a_reviewer() -> None:
    call_command("load_demo")
    project = Project.objects.get()
    out = StringIO()
    call_command("app_key_create", project=project.name, user="lead", name="readme", stdout=out)
    plaintext = out.getvalue().strip()
    [key] = ApplicationKey.objects.filter(project=project)
    assert key.name == "readme"
    assert application_key_authenticate(plaintext, project=project) == key

    with pytest.raises(CommandError, match="may not manage the keys"):
        call_command("app_key_create", project=project.name, user="reviewer", name="nope")
    with pytest.raises(CommandError, match="--project"):
        call_command("app_key_create", project="nowhere", user="lead", name="x")
