"""A small search over training settings within a time budget, through the product, against
the recipe's own settings trained alone, on the many-label task of bench/classification.py.

    python bench/search.py [--labels 60] [--per-label 10] [--test-per-label 5]
                           [--trials 3] [--budget 90]

The data goes in as a lead's would (bench/classification.py steps 1: CSV import with the
project's system prompt, bulk approve, the label set as the contract, a split per label, the
test messages frozen as a held-out test set). Then a search (training.searches) with the
defaults: its first trial is the short-label recipe as it is, the next ones double and halve
the learning rate (and, with four, halve the rank); each stops after two validation passes
without a better label accuracy, and each starts only if its launch estimate fits in what is
left of the budget. The bench is the worker: it runs each queued trial with the worker's own
code and advances the search as the worker's task would.

The baseline, side by side in the same run, is the first trial: the recipe trained alone, as a
launch without a search would. Both it and the trial the search registered are evaluated on
the held-out test set with constrained decoding, the default for label sets.

Printed: each trial's settings, validation label accuracy at its kept step, minutes and whether
it stopped early; the test accuracy of the search's pick and of the recipe alone; the search's
minutes against the recipe's. The last line is key=value.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.classification import prepared_task  # noqa: E402
from bench.databases import in_scratch_django_database  # noqa: E402

MAX_ROUNDS = 10


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from unittest import mock

    from training import runner, searches
    from training.models import JobStatus

    task = prepared_task(args)
    project, lead, test_set, base_model = task.project, task.lead, task.test_set, task.base_model
    # The bench is the worker: nothing is sent to one listening on the broker.
    with mock.patch("celery.app.task.Task.apply_async"):
        search = searches.training_search_create(
            project=project,
            dataset_version=task.version,
            base_model=base_model,
            user=lead,
            budget_minutes=args.budget,
            trial_count=args.trials,
            model_name="intents",
        )
        for _ in range(MAX_ROUNDS):
            for trial in search.trials.filter(status=JobStatus.QUEUED).order_by("id"):
                print(f"trial job {trial.pk}: {trial.hyperparameters}", flush=True)
                runner.training_job_run(job_id=trial.pk)
            search = searches.training_search_advance(search_id=search.pk)
            if search.is_finished:
                break
    if search.best_job is None:
        raise SystemExit(f"the search {search.status}: {search.outcome}")
    figures = _compare(project, lead, search, test_set, base_model)
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


def _trial_lines(search: Any) -> list[Any]:
    from training.selectors import search_trial_rows

    rows = search_trial_rows(search)
    for row in rows:
        if row.job is None:
            print(f"trial {row.number} ({row.changes}): not started", flush=True)
            continue
        accuracy = "none" if row.val_accuracy is None else f"{row.val_accuracy:.3f}"
        print(
            f"trial {row.number} ({row.changes}; lr {row.learning_rate:g}, r {row.lora_r}): "
            f"{row.job.status}, validation accuracy {accuracy} at step {row.job.best_step} of "
            f"{row.job.total_steps}{', stopped early' if row.job.stopped_early else ''}, "
            f"{row.minutes or 0:.1f} min{'  <- registered' if row.is_best else ''}",
            flush=True,
        )
    return rows


def _compare(project: Any, lead: Any, search: Any, test_set: Any, base_model: Any) -> dict:
    from unittest import mock

    from evaluation import runner as eval_runner
    from evaluation import services as eval_services
    from evaluation.models import CandidateKind, EvalSplit
    from evaluation.services import CandidateSpec
    from registry.models import ModelVersion
    from training.hooks import TrainedModel, model_version_keeper
    from training.selectors import trial_result

    print(f"search {search.status}: {search.outcome}", flush=True)
    rows = _trial_lines(search)
    recipe_job = rows[0].job
    best = search.best_job
    # The recipe trained alone is the first trial; a lead registers it from its checkpoint
    # when the search picked another.
    if recipe_job.pk != best.pk:
        result = trial_result(recipe_job)
        model_version_keeper().job_succeeded(
            TrainedModel(
                job=recipe_job,
                checkpoint=recipe_job.checkpoints.filter(step=recipe_job.best_step).first(),
                adapter_dir=recipe_job.adapter_dir,
                train_loss=result.train_loss,
                val_loss=result.val_loss,
            )
        )
    picked = ModelVersion.objects.get(training_job=best)
    recipe = ModelVersion.objects.get(training_job=recipe_job)
    candidates = [
        CandidateSpec(
            kind=CandidateKind.MODEL_VERSION, model_version=picked, constrained=True, label="pick"
        )
    ]
    if recipe.pk != picked.pk:
        candidates.append(
            CandidateSpec(
                kind=CandidateKind.MODEL_VERSION,
                model_version=recipe,
                constrained=True,
                label="recipe",
            )
        )
    with mock.patch.object(eval_services, "eval_run_dispatch"):
        evaluation = eval_services.eval_run_create(
            project=project,
            dataset_version=test_set,
            split=EvalSplit.ALL,
            candidates=candidates,
            user=lead,
            max_new_tokens=24,
        )
    finished = eval_runner.eval_run_execute(run_id=evaluation.pk)
    if finished is None or finished.status != "succeeded":
        raise SystemExit(f"the evaluation failed: {finished.error if finished else 'lost'}")
    accuracy = {
        candidate.label: candidate.metrics["labels"]["accuracy"]
        for candidate in evaluation.candidates.all()
    }
    # The product adds the answer mode to each label ("pick, constrained to the labels").
    pick_accuracy = next(value for label, value in accuracy.items() if label.startswith("pick"))
    recipe_accuracy = next(
        (value for label, value in accuracy.items() if label.startswith("recipe")), pick_accuracy
    )
    search_minutes = sum(trial.compute_seconds for trial in search.trials.all()) / 60
    recipe_minutes = recipe_job.compute_seconds / 60
    print(
        f"test accuracy, constrained: search's pick {pick_accuracy:.3f}, recipe alone "
        f"{recipe_accuracy:.3f}; {search_minutes:.1f} min against {recipe_minutes:.1f}",
        flush=True,
    )
    best_row = next(row for row in rows if row.is_best)
    return {
        "pick_accuracy": round(pick_accuracy, 4),
        "recipe_accuracy": round(recipe_accuracy, 4),
        "points_gained": round(pick_accuracy - recipe_accuracy, 4),
        "best_trial": best_row.number,
        "best_learning_rate": best_row.learning_rate,
        "best_lora_r": best_row.lora_r,
        "trials_run": search.trials.count(),
        "trials_stopped_early": search.trials.filter(stopped_early=True).count(),
        "search_minutes": round(search_minutes, 2),
        "recipe_minutes": round(recipe_minutes, 2),
        "time_ratio": round(search_minutes / recipe_minutes, 2) if recipe_minutes else 0,
        "budget_minutes": search.budget_minutes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--labels", type=int, default=60)
    parser.add_argument("--per-label", type=int, default=10)
    parser.add_argument("--test-per-label", type=int, default=5)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--budget", type=int, default=90, help="minutes of worker time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as artifacts:
        # The trials' adapters and checkpoints go away with the run.
        os.environ["FTPORTAL_ARTIFACTS_DIR"] = artifacts
        in_scratch_django_database("ftportal_bench_search", lambda: run(args))


if __name__ == "__main__":
    main()
