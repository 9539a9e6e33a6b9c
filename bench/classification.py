"""Many-label classification from ten examples a label, through the product, against few-shot
prompting of the same base model in the same run.

    python bench/classification.py [--labels 60] [--per-label 10] [--test-per-label 5]
                                   [--recipe label_set|general]

The task (bench/intent_task.py): 60 intents of a bank's and a travel desk's customers, ten
training messages each and a separate test set of five each, a third of them worded in a way no
training example is. The labels are this bank's own codes, so zero-shot prompting cannot name
them. The run goes the way a new ML lead's does, each step through the product's own services
in a scratch Postgres database:

1. a project with a default system prompt; the training messages imported as a CSV (the
   prompt put in front of each), bulk approved, the label set derived from the approved answers
   and declared as the answer contract, the version frozen with the defaults (a 15 % split,
   drawn per label); the test messages imported the same way into their own dataset and frozen
   as a held-out test set;
2. a local LoRA job launched with the defaults (the recipe chosen for label-set contracts) and
   run by the worker's own code in this process;
3. one evaluation of the test set: the fine-tuned version with constrained decoding (the
   product's default answer mode for label sets), ranking the labels by likelihood, and
   generating freely; the base model zero-shot, 5-shot, and 5-shot constrained with the label
   list in its system prompt (the strongest prompting here). Few-shot examples are drawn from
   the training version's train split.

``--recipe general`` trains with the general recipe's settings instead, typed in as a lead
would, to compare the two on the same task.

Printed: each candidate's label accuracy, macro-F1 and invalid-label rate, the training minutes
(the job's worker seconds), and the best few-shot accuracy. Targets (issue 18): no invalid
labels with constrained decoding, accuracy at least 40 points above 5-shot prompting, training
at most 30 minutes on a 2-core CPU. The last line is key=value.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.databases import in_scratch_django_database  # noqa: E402
from bench.intent_task import IntentExample, intent_task  # noqa: E402

SYSTEM = "Classify the customer's message. Answer with its intent code only."
SHOTS = 5
TARGET_POINTS_ABOVE_FEW_SHOT = 0.40
TARGET_TRAIN_MINUTES = 30.0


def _csv_upload(examples: list[IntentExample], name: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["message", "intent"])
    writer.writerows([example.text, example.label] for example in examples)
    return SimpleUploadedFile(name, text.getvalue().encode(), content_type="text/csv")


def imported_and_approved(project: Any, user: Any, name: str, examples: list[IntentExample]) -> Any:
    """A dataset of ``examples`` imported as CSV, bulk approved, with the derived label set as
    its answer contract: the steps a lead clicks through."""
    from datasets.formats import CsvMapping
    from datasets.imports.services import ImportRequest, import_submit
    from datasets.review.services import BulkAction, examples_bulk_apply
    from datasets.services import approved_label_counts, dataset_contract_set, dataset_create

    dataset = dataset_create(project=project, name=name)
    import_submit(
        dataset=dataset,
        upload=_csv_upload(examples, f"{name}.csv"),
        user=user,
        request=ImportRequest(
            csv_mapping=CsvMapping(input_column="message", output_column="intent")
        ),
    )
    examples_bulk_apply(
        action=BulkAction.APPROVE, dataset=dataset, examples=dataset.examples.all(), user=user
    )
    contract, counts = approved_label_counts(dataset=dataset)
    dataset_contract_set(dataset=dataset, contract=contract)
    print(f"{name}: {dataset.examples.count()} examples approved, {len(counts)} labels", flush=True)
    return dataset


def _candidates(version: Any, train_version: Any, base_model: Any, labels: list[str]) -> list[Any]:
    from evaluation.models import CandidateKind, Prompting
    from evaluation.services import CandidateSpec

    fine_tuned = CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=version)
    few_shot = CandidateSpec(
        kind=CandidateKind.BASE,
        base_model=base_model,
        prompting=Prompting.FEW_SHOT,
        few_shot_k=SHOTS,
        shots_version=train_version,
    )
    with_label_list = f"{SYSTEM} The intent codes are: {', '.join(labels)}."
    return [
        CandidateSpec(**{**fine_tuned.__dict__, "constrained": True, "label": "fine-tuned"}),
        CandidateSpec(**{**fine_tuned.__dict__, "label_scoring": True, "label": "fine-tuned"}),
        CandidateSpec(**{**fine_tuned.__dict__, "label": "fine-tuned, free"}),
        CandidateSpec(kind=CandidateKind.BASE, base_model=base_model, label="zero-shot"),
        CandidateSpec(**{**few_shot.__dict__, "label": "5-shot"}),
        CandidateSpec(
            **{
                **few_shot.__dict__,
                "constrained": True,
                "system_prompt": with_label_list,
                "label": "5-shot, label list",
            }
        ),
    ]


@dataclass(frozen=True)
class PreparedTask:
    """The task as a lead's data: the project, its lead, the frozen training version and the
    held-out test set, and the local base model to train."""

    project: Any
    lead: Any
    version: Any
    test_set: Any
    base_model: Any


def prepared_task(args: argparse.Namespace) -> PreparedTask:
    """Step 1 of the run (the module's docstring), shared with bench/search.py."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from bench.prepare import prepared_base_model
    from catalog.models import BaseModel, Provider
    from datasets.services import dataset_version_freeze
    from ftportal.services import project_create

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    prepared_base_model()
    lead = User.objects.create_user(username="lead", is_staff=True)
    project = project_create(
        creator=lead, name="intents", description="bench", default_system_prompt=SYSTEM
    )
    train, test = intent_task(
        train_per_label=args.per_label, test_per_label=args.test_per_label, labels=args.labels
    )
    training_data = imported_and_approved(project, lead, "intents", train)
    test_data = imported_and_approved(project, lead, "intents-test", test)
    # Messages generated from shared phrasings are near duplicates by design.
    reason = "bench: generated from shared phrasings"
    version = dataset_version_freeze(
        dataset=training_data, user=lead, overlap_override_reason=reason
    )
    test_set = dataset_version_freeze(dataset=test_data, user=lead, test_set=True)
    exact, near = overlap_counts(test_set)
    print(
        f"frozen: {version.train_count} train, {version.validation_count} validation; test set "
        f"{test_set.example_count} items, overlap with training {exact} exact, {near} near; "
        f"prepared in {time.perf_counter() - started:.0f} s; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    base_model = BaseModel.objects.get(provider=Provider.LOCAL, key="smollm2-135m-instruct")
    return PreparedTask(project, lead, version, test_set, base_model)


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from unittest import mock

    from evaluation import runner as eval_runner
    from evaluation import services as eval_services
    from evaluation.models import EvalSplit
    from training import runner, services

    task = prepared_task(args)
    project, lead, version, test_set = task.project, task.lead, task.version, task.test_set
    base_model = task.base_model
    # The bench is the worker: nothing is sent to one listening on the broker.
    with mock.patch.object(services, "dispatch"):
        job = services.training_job_launch(
            project=project,
            dataset_version=version,
            base_model=base_model,
            user=lead,
            idempotency_key="",
            hyperparameters=_typed_in(args.recipe),
        ).obj
    print(f"training with {job.hyperparameters}", flush=True)
    runner.training_job_run(job_id=job.pk)
    job.refresh_from_db()
    if job.status != "succeeded":
        raise SystemExit(f"the job {job.status}: {job.error}")
    train_minutes = job.compute_seconds / 60
    print(
        f"trained {job.total_steps} steps in {train_minutes:.1f} min, "
        f"{job.tokens_per_second:.0f} tokens/s; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    model_version = job.model_versions.get()
    labels = list(version.answer_contract["labels"])
    with mock.patch.object(eval_services, "eval_run_dispatch"):
        evaluation = eval_services.eval_run_create(
            project=project,
            dataset_version=test_set,
            split=EvalSplit.ALL,
            candidates=_candidates(model_version, version, base_model, labels),
            user=lead,
            max_new_tokens=24,
        )
    began = time.perf_counter()
    finished = eval_runner.eval_run_execute(run_id=evaluation.pk)
    if finished is None or finished.status != "succeeded":
        raise SystemExit(f"the evaluation failed: {finished.error if finished else 'lost'}")
    print(f"evaluated in {(time.perf_counter() - began) / 60:.1f} min", flush=True)
    figures = _report(evaluation, train_minutes)
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


def _typed_in(recipe: str) -> dict[str, Any]:
    """What a lead types in to get ``recipe``: nothing for the default of label sets."""
    if recipe == "label_set":
        return {}
    from dataclasses import asdict

    from providers.base import TrainingConfig

    general = asdict(TrainingConfig())
    names = ("target_modules", "lora_r", "lora_alpha", "learning_rate", "epochs")
    return {name: general[name] for name in names}


def overlap_counts(test_set: Any) -> tuple[int, int]:
    test_set.refresh_from_db()
    versions = test_set.test_overlaps.get("versions", [])
    return sum(v.get("exact", 0) for v in versions), sum(v.get("near", 0) for v in versions)


def _report(evaluation: Any, train_minutes: float) -> dict[str, object]:
    rows = {}
    for candidate in evaluation.candidates.order_by("position"):
        labels = candidate.metrics["labels"]
        rows[candidate.label] = labels
        print(
            f"{candidate.label:62} accuracy {labels['accuracy']:.3f}  macro-F1 "
            f"{labels['macro_f1']:.3f}  invalid {labels['invalid_rate']:.3f}  "
            f"({candidate.generation_seconds or 0:.0f} s)",
            flush=True,
        )
    constrained = next(v for k, v in rows.items() if "constrained" in k and "fine" in k)
    scored = next(v for k, v in rows.items() if "likelihood" in k)
    free = next(v for k, v in rows.items() if "free" in k)
    zero_shot = next(v for k, v in rows.items() if k.startswith("zero-shot"))
    few_shot = max(v["accuracy"] for k, v in rows.items() if k.startswith("5-shot"))
    return {
        "accuracy": round(constrained["accuracy"], 4),
        "macro_f1": round(constrained["macro_f1"], 4),
        "invalid_rate": round(constrained["invalid_rate"], 4),
        "label_scoring_accuracy": round(scored["accuracy"], 4),
        "free_accuracy": round(free["accuracy"], 4),
        "free_invalid_rate": round(free["invalid_rate"], 4),
        "zero_shot_accuracy": round(zero_shot["accuracy"], 4),
        "fewshot_accuracy": round(few_shot, 4),
        "points_above_fewshot": round(constrained["accuracy"] - few_shot, 4),
        "train_minutes": round(train_minutes, 2),
        "targets_met": int(
            constrained["invalid_rate"] == 0
            and constrained["accuracy"] - few_shot >= TARGET_POINTS_ABOVE_FEW_SHOT
            and train_minutes <= TARGET_TRAIN_MINUTES
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--labels", type=int, default=60)
    parser.add_argument("--per-label", type=int, default=10)
    parser.add_argument("--test-per-label", type=int, default=5)
    parser.add_argument("--recipe", choices=("label_set", "general"), default="label_set")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as artifacts:
        # The job's adapter and checkpoints go away with the run.
        os.environ["FTPORTAL_ARTIFACTS_DIR"] = artifacts
        in_scratch_django_database("ftportal_bench_classification", lambda: run(args))


if __name__ == "__main__":
    main()
