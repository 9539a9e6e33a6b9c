"""The job page through Django's test client: its status fragment polls while the job runs and
stops once it has finished, its charts carry the stored curves, and it warns of overfitting,
lists the checkpoints and registers one."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from registry.models import ModelVersion
from tests.charts import page_charts, series_points
from tests.pages.builders import HTMX, XSS, XSS_ESCAPED, World
from tests.pages.builders import world_job as _job
from tests.pages.fixtures import page_world_fixture  # noqa: F401
from training.models import Checkpoint, JobEvent, JobStatus, TrainingMetric


def test_a_running_job_fragment_polls_and_shows_the_step(
    client: Client, world: World, lead: User
) -> None:
    TrainingMetric.objects.create(job=world.running_job, step=1, epoch=0.3, train_loss=2.5)
    client.force_login(lead)
    url = reverse("job_detail", args=[world.project.pk, world.running_job.pk])

    fragment = client.get(url, headers=HTMX).content.decode()

    assert "<html" not in fragment
    assert 'id="job-status"' in fragment
    assert 'hx-trigger="every 2s"' in fragment
    assert f'hx-get="{url}"' in fragment
    assert "step 1 of 3" in fragment
    # The chart comes with each poll, so the curve grows while the job runs.
    loss = page_charts(fragment)["loss-chart-data"]
    assert series_points(loss) == {"Training loss": [[1, 2.5]], "Validation loss": []}


def test_the_job_page_warns_of_overfitting_lists_checkpoints_and_registers_one(
    client: Client, world: World, lead: User
) -> None:
    job = world.running_job
    job.total_steps = 12
    job.save()
    for step in range(1, 13):
        val = {3: 1.0, 6: 1.1, 9: 1.2, 12: 1.3}.get(step)
        TrainingMetric.objects.create(
            job=job,
            step=step,
            epoch=step / 4,
            train_loss=2.0 - 0.1 * step,
            val_loss=val,
            learning_rate=1e-3 * (1 - step / 12),
            tokens_per_second=800.0,
        )
    Checkpoint.objects.create(job=job, step=6, path="/nowhere/step-6", val_loss=1.1)
    JobEvent.objects.create(job=job, message=XSS)
    client.force_login(lead)
    url = reverse("job_detail", args=[world.project.pk, job.pk])

    page = client.get(url).content.decode()

    assert 'id="overfitting"' in page and "risen for 3 evaluations" in page
    assert 'id="lr-chart"' in page and 'id="speed-chart"' in page
    assert page.count('class="register-checkpoint"') == 2
    assert XSS not in page and XSS_ESCAPED in page
    checkpoint = job.checkpoints.get(step=6)
    response = client.post(
        reverse("checkpoint_register", args=[world.project.pk, job.pk, checkpoint.pk])
    )
    assert response.status_code == 302
    version = ModelVersion.objects.get(checkpoint=checkpoint)
    assert version.adapter_dir == "/nowhere/step-6"
    after = client.get(url).content.decode()
    assert after.count('class="register-checkpoint"') == 1
    assert str(version) in after


def test_the_job_page_charts_the_stored_curves_with_axis_titles_units_and_legends(
    client: Client, world: World, lead: User
) -> None:
    job = world.running_job
    job.total_steps = 8
    job.save()
    stored = [  # step, train loss, validation loss (every 4 steps), learning rate, tokens/s
        (step, 2.0 - 0.1 * step, 1.5 - 0.05 * step if step % 4 == 0 else None, 2e-4 / step, 900.0)
        for step in range(1, 9)
    ]
    for step, train, val, rate, tokens in stored:
        TrainingMetric.objects.create(
            job=job,
            step=step,
            epoch=step / 8,
            train_loss=train,
            val_loss=val,
            learning_rate=rate,
            tokens_per_second=tokens,
        )
    parts = {"project": world.project, "version": world.version, "base_model": world.base_model}
    other = _job(parts | {"user": lead}, JobStatus.RUNNING)
    TrainingMetric.objects.create(job=other, step=1, epoch=0.1, train_loss=9.9)  # not this job's
    client.force_login(lead)

    charts = page_charts(
        client.get(reverse("job_detail", args=[world.project.pk, job.pk])).content.decode()
    )

    loss, lr, speed = charts["loss-chart-data"], charts["lr-chart-data"], charts["speed-chart-data"]
    assert series_points(loss) == {
        "Training loss": [[step, train] for step, train, _, _, _ in stored],
        "Validation loss": [[step, val] for step, _, val, _, _ in stored if val is not None],
    }
    assert series_points(lr) == {"Learning rate": [[s, rate] for s, _, _, rate, _ in stored]}
    assert series_points(speed) == {"Tokens per second": [[s, 900.0] for s in range(1, 9)]}
    assert loss["x"] == {"title": "Step", "format": "integer", "min": 0, "max": 8, "labels": []}
    assert loss["y"]["title"] == "Loss (cross-entropy per token)"
    assert (lr["y"]["title"], lr["y"]["format"]) == ("Learning rate", "scientific")
    assert speed["y"]["title"] == "Tokens per second"
    assert lr["x"]["title"] == speed["x"]["title"] == "Step"


def test_a_job_without_metrics_has_no_chart_yet(client: Client, world: World, lead: User) -> None:
    client.force_login(lead)

    page = client.get(reverse("job_detail", args=[world.project.pk, world.running_job.pk]))

    assert page_charts(page.content.decode()) == {}
    assert "Loss curves appear after the first step." in page.content.decode()


def test_a_finished_job_fragment_stops_polling(client: Client, world: World, lead: User) -> None:
    client.force_login(lead)
    finished = world.v1.training_job
    url = reverse("job_detail", args=[world.project.pk, finished.pk])

    fragment = client.get(url, headers=HTMX).content.decode()
    full_page = client.get(url).content.decode()

    assert "<html" not in fragment
    assert "Succeeded" in fragment
    assert "hx-trigger" not in fragment
    assert "hx-trigger" not in full_page
    assert 'id="evaluate-version"' in fragment


def test_a_finished_local_job_shows_its_precision_speed_and_utilisation(
    client: Client, world: World, lead: User
) -> None:
    finished = world.v1.training_job
    finished.precision = "bf16"
    finished.tokens_per_second = 456.7
    finished.model_flops_utilization = 0.0784
    finished.save()
    running = world.running_job
    running.precision = "fp32"
    running.tokens_per_second = 300.0
    running.save()
    client.force_login(lead)

    done = client.get(reverse("job_detail", args=[world.project.pk, finished.pk])).content.decode()
    still = client.get(reverse("job_detail", args=[world.project.pk, running.pk])).content.decode()

    assert '<span id="job-precision">bf16</span>' in done
    assert "Trained at 457 tokens/s" in done
    assert "model FLOP utilisation 7.8 %" in done
    assert "measured peak in bf16" in done
    assert '<span id="job-precision">fp32</span>' in still
    # While it runs, the speed is the live one by the step; utilisation comes at the end.
    assert 'id="job-speed"' not in still
