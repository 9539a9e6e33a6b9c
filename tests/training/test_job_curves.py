"""The job's curves as chart data (training/selectors.py job_curves); the page draws them."""

import pytest

from ftportal.roles import Role
from tests.factories import frozen_version
from training.models import TrainingJob, TrainingMetric
from training.selectors import job_curves

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(project, make_member, base_model):
    lead = make_member(Role.ML_LEAD)
    return TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base_model,
        provider="local",
        hyperparameters={},
        model_name="m",
        created_by=lead,
        total_steps=4,
    )


def test_the_loss_axis_fits_the_losses_so_small_drops_are_visible(job):
    for step, loss in [(3, 2.20), (1, 2.30), (4, 2.10), (2, 2.25)]:  # stored out of order
        TrainingMetric.objects.create(job=job, step=step, epoch=step / 4, train_loss=loss)

    curves = job_curves(job)

    assert curves.train_loss.points == [(1, 2.30), (2, 2.25), (3, 2.20), (4, 2.10)]
    # No lower bound: the library fits the axis to 2.1..2.3 instead of starting at zero.
    assert curves.loss.y.min is None and curves.loss.y.max is None
    assert (curves.loss.x.min, curves.loss.x.max) == (0, 4)


def test_the_step_axis_runs_to_the_planned_last_step_or_beyond_it(job):
    TrainingMetric.objects.create(job=job, step=1, epoch=0.2, train_loss=1.0)
    assert job_curves(job).loss.x.max == 4
    TrainingMetric.objects.create(job=job, step=6, epoch=1.2, train_loss=0.9)
    assert job_curves(job).loss.x.max == 6


def test_a_single_validation_point_is_its_own_series(job):
    TrainingMetric.objects.create(job=job, step=2, epoch=0.5, train_loss=1.0, val_loss=0.8)

    curves = job_curves(job)

    assert curves.val_loss.points == [(2, 0.8)]
    assert curves.val_loss.latest == 0.8
    assert curves.learning_rate.is_empty and curves.speed.is_empty


def test_no_metrics_means_empty_charts(job):
    curves = job_curves(job)
    assert curves.loss.is_empty and curves.learning_rate.is_empty and curves.speed.is_empty
    assert curves.val_loss.latest is None
