"""Training reaches the registry only through its hook (training.hooks): a succeeded local or
hosted job hands its output over once, inside the transaction that marks it succeeded, so the
job and its model version commit together; with nothing registered, the job still succeeds."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from catalog.models import BaseModel, EndpointKind, Provider
from fakes.openai_server import FakeOpenAIServer, fake_openai_fixture  # noqa: F401
from ftportal.models import Project
from ftportal.roles import Role
from providers.base import CheckpointSaved, TrainingProgress, TrainingResult
from registry.keeper import RegistryKeeper
from registry.models import ModelVersion
from tests.factories import fake_endpoint, frozen_version
from training import hooks, runner
from training.hooks import TrainedModel, model_version_keeper, register_model_version_keeper
from training.hosted import Outcome, training_job_poll, training_job_submit
from training.models import JobStatus, TrainingJob

pytestmark = pytest.mark.django_db
MAX_POLLS = 40


class InstantFineTuner:
    """Trains nothing: saves a checkpoint at steps 2 and 4 and keeps step 2 as the best."""

    device = "cpu"

    def train(
        self,
        *,
        output_dir: Path,
        on_checkpoint: Callable[[CheckpointSaved], None] | None = None,
        on_progress: Callable[[TrainingProgress], None],
        **_: Any,
    ) -> TrainingResult:
        assert on_checkpoint is not None
        for step, loss in ((2, 0.5), (4, 0.7)):
            on_checkpoint(CheckpointSaved(step, output_dir / f"checkpoint-{step}", loss, loss))
        return TrainingResult(
            adapter_dir=output_dir / "checkpoint-2",
            steps=4,
            train_loss=0.4,
            val_loss=0.5,
            device="cpu",
            seconds=0.01,
            best_step=2,
            stopped_early=True,
        )


class RecordingKeeper:
    """Keeps what training hands over instead of registering it; refuses it when told to."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.succeeded: list[TrainedModel] = []
        self.refuse = refuse

    def job_succeeded(self, trained: TrainedModel) -> None:
        self.succeeded.append(trained)
        if self.refuse:
            raise RuntimeError("the registry refused the version")

    def versions_losing_their_base(self, project: Project, *, today: Any) -> Sequence[Any]:
        return []


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def keeper_replaced() -> Iterator[Callable[[hooks.ModelVersionKeeper], None]]:
    """Lets a test put its own keeper in; the registry's one is back afterwards."""
    registered = model_version_keeper()
    yield register_model_version_keeper
    register_model_version_keeper(registered)


@pytest.fixture
def local_job(
    project: Project, lead: User, base_model: BaseModel, monkeypatch: pytest.MonkeyPatch
) -> TrainingJob:
    monkeypatch.setattr(runner, "fine_tuner_for", lambda base: InstantFineTuner())
    return TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base_model,
        provider=Provider.LOCAL,
        hyperparameters={"epochs": 1},
        model_name="triage",
        created_by=lead,
    )


@pytest.fixture
def hosted_job(project: Project, lead: User, fake_openai: FakeOpenAIServer) -> TrainingJob:
    base, _ = BaseModel.objects.update_or_create(
        key="gpt-4o-mini-2024-07-18",
        defaults={
            "display_name": "GPT-4o mini",
            "provider": Provider.OPENAI,
            "tokenizer": "o200k_base",
            "training_usd_per_million_tokens": Decimal("3.00"),
            "endpoint": fake_endpoint(
                fake_openai.base_url, secret_env="OPENAI_API_KEY", kind=EndpointKind.OPENAI
            ),
            "deprecated_at": None,
            "is_active": True,
        },
    )
    return TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base,
        provider=Provider.OPENAI,
        hyperparameters={"epochs": 2, "batch_size": None, "learning_rate_multiplier": None},
        model_name="triage",
        created_by=lead,
    )


def hosted_job_to_the_end(job: TrainingJob) -> None:
    training_job_submit(job_id=job.pk)
    for _ in range(MAX_POLLS):
        if training_job_poll(job_id=job.pk) == Outcome():
            job.refresh_from_db()
            return
    raise AssertionError(f"job {job.pk} did not finish in {MAX_POLLS} polls")


def test_the_registry_is_the_keeper_training_hands_its_jobs_to() -> None:
    assert isinstance(model_version_keeper(), RegistryKeeper)


def test_a_succeeded_local_job_registers_one_version_of_its_best_checkpoint(
    local_job: TrainingJob,
) -> None:
    runner.training_job_run(job_id=local_job.pk)

    local_job.refresh_from_db()
    assert local_job.status == JobStatus.SUCCEEDED, local_job.error
    [version] = ModelVersion.objects.filter(training_job=local_job)
    assert version.checkpoint is not None and version.checkpoint.step == 2
    assert version.adapter_dir == local_job.adapter_dir
    assert (version.final_train_loss, version.final_val_loss) == (0.4, 0.5)
    assert (version.registered_model.name, version.number) == ("triage", 1)


def test_a_local_job_hands_its_output_to_the_hook_once_and_imports_no_registry(
    local_job: TrainingJob, keeper_replaced: Callable[[hooks.ModelVersionKeeper], None]
) -> None:
    keeper = RecordingKeeper()
    keeper_replaced(keeper)

    runner.training_job_run(job_id=local_job.pk)

    [trained] = keeper.succeeded
    assert trained.job.pk == local_job.pk and trained.job.status == JobStatus.SUCCEEDED
    assert trained.checkpoint is not None and trained.checkpoint.step == 2
    assert trained.adapter_dir.endswith("checkpoint-2") and trained.fine_tuned_model == ""
    # The registry's own keeper was not there, so nothing registered a version behind its back.
    assert not ModelVersion.objects.exists()


def test_a_version_the_keeper_refuses_leaves_the_local_job_unfinished(
    local_job: TrainingJob, keeper_replaced: Callable[[hooks.ModelVersionKeeper], None]
) -> None:
    keeper_replaced(RecordingKeeper(refuse=True))

    with pytest.raises(RuntimeError, match="refused"):
        runner.training_job_run(job_id=local_job.pk)

    local_job.refresh_from_db()
    assert local_job.status == JobStatus.RUNNING
    assert local_job.actual_cost_usd is None and local_job.finished_at is None


def test_with_nothing_registered_a_local_job_succeeds_without_a_version(
    local_job: TrainingJob, keeper_replaced: Callable[[hooks.ModelVersionKeeper], None]
) -> None:
    keeper_replaced(hooks.KeepsNothing())

    runner.training_job_run(job_id=local_job.pk)

    local_job.refresh_from_db()
    assert local_job.status == JobStatus.SUCCEEDED
    assert not ModelVersion.objects.exists()


def test_a_succeeded_hosted_job_registers_one_version_of_its_fine_tuned_model(
    hosted_job: TrainingJob,
) -> None:
    hosted_job_to_the_end(hosted_job)

    assert hosted_job.status == JobStatus.SUCCEEDED, hosted_job.error
    [version] = ModelVersion.objects.filter(training_job=hosted_job)
    assert version.fine_tuned_model == hosted_job.fine_tuned_model != ""
    assert version.checkpoint is None and version.adapter_dir == ""


def test_a_hosted_job_hands_its_model_to_the_hook_once(
    hosted_job: TrainingJob, keeper_replaced: Callable[[hooks.ModelVersionKeeper], None]
) -> None:
    keeper = RecordingKeeper()
    keeper_replaced(keeper)

    hosted_job_to_the_end(hosted_job)

    [trained] = keeper.succeeded
    assert trained.job.pk == hosted_job.pk and trained.checkpoint is None
    assert trained.fine_tuned_model == hosted_job.fine_tuned_model != ""
    assert not ModelVersion.objects.exists()


def test_a_version_the_keeper_refuses_leaves_the_hosted_job_unfinished(
    hosted_job: TrainingJob, keeper_replaced: Callable[[hooks.ModelVersionKeeper], None]
) -> None:
    keeper_replaced(RecordingKeeper(refuse=True))

    with pytest.raises(RuntimeError, match="refused"):
        hosted_job_to_the_end(hosted_job)

    hosted_job.refresh_from_db()
    assert hosted_job.status != JobStatus.SUCCEEDED and not hosted_job.fine_tuned_model
    assert hosted_job.actual_cost_usd is None


def test_the_catalog_page_asks_the_keeper_which_versions_lose_their_base(
    client: Any,
    project: Project,
    make_member: Callable[[Role], User],
    keeper_replaced: Callable[[hooks.ModelVersionKeeper], None],
) -> None:
    class Going:
        version = "<i>triage</i> v3"
        reason = "its base shuts down soon"

    class KeeperWithOneLoss(RecordingKeeper):
        def versions_losing_their_base(self, project: Project, *, today: Any) -> Sequence[Any]:
            return [Going()]

    client.force_login(make_member(Role.MANAGER))
    url = reverse("base_model_catalog", args=[project.pk])
    keeper_replaced(hooks.KeepsNothing())
    assert 'id="endangered-versions"' not in client.get(url).content.decode()

    keeper_replaced(KeeperWithOneLoss())
    page = client.get(url).content.decode()

    assert 'id="endangered-versions"' in page
    assert "&lt;i&gt;triage&lt;/i&gt; v3</a>: its base shuts down soon." in page
