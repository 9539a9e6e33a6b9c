import pytest

from ftportal.roles import Role
from tests.factories import frozen_version
from training.models import TrainingJob, TrainingMetric
from training.selectors import CHART_HEIGHT, CHART_PADDING, loss_chart

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


def test_the_axis_fits_the_losses_so_small_drops_are_visible(job):
    for step, loss in [(1, 2.30), (2, 2.25), (3, 2.20), (4, 2.10)]:
        TrainingMetric.objects.create(job=job, step=step, epoch=step / 4, train_loss=loss)
    chart = loss_chart(job)
    ys = [y for _, y in chart.train]
    assert ys == sorted(ys)  # falling loss draws a line going down the page (y grows)
    assert ys[-1] - ys[0] > (CHART_HEIGHT - 2 * CHART_PADDING) * 0.5
    assert chart.low < 2.10 < 2.30 < chart.high


def test_a_single_validation_point_is_drawn_inside_the_frame(job):
    TrainingMetric.objects.create(job=job, step=2, epoch=0.5, train_loss=1.0, val_loss=1.0)
    chart = loss_chart(job)
    [(x, y)] = chart.val
    assert CHART_PADDING <= y <= CHART_HEIGHT - CHART_PADDING
    assert chart.latest_val == 1.0


def test_no_metrics_means_an_empty_chart(job):
    assert loss_chart(job).is_empty
