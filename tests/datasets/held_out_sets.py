"""Builders for the held-out test set tests (datasets, training, evaluation, the browser):
datasets of generated support tickets with odd characters (bench/test_set_overlap.py's
generator: several scripts, emoji, right-to-left text, markup, quotes, tabs), approved and
frozen as a training version or as a test set that repeats some training inputs exactly (in
another case and spacing) and nearly (one word added)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User

from bench.test_set_overlap import exact_copy, messages, near_copy, tickets
from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus
from datasets.services import dataset_version_freeze
from ftportal.models import Project

# A hostile input among the test items: pages must show it as text.
HOSTILE = '<script>window.__xss=1</script> ‮ "Rechnung" №42 — 退款 🙃'


def approved_dataset(project: Project, name: str, rows: list[tuple[str, str]]) -> Dataset:
    dataset = Dataset.objects.create(project=project, name=name)
    Example.objects.bulk_create(
        (
            Example(dataset=dataset, messages=messages(text, label), status=ExampleStatus.APPROVED)
            for text, label in rows
        ),
        batch_size=1000,
    )
    return dataset


@dataclass(frozen=True)
class HeldOutWorld:
    """A training version and a test set frozen after it, sharing ``exact`` inputs exactly and
    ``near`` nearly (the first and the last training rows)."""

    training: DatasetVersion
    test_set: DatasetVersion
    training_rows: list[tuple[str, str]]
    test_rows: list[tuple[str, str]]
    exact: int
    near: int


def held_out_rows_sharing(
    training_rows: list[tuple[str, str]], *, count: int, exact: int, near: int, seed: int = 2
) -> list[tuple[str, str]]:
    """``count`` test rows: ``exact`` training inputs again, ``near`` of them nearly, the
    hostile input, and new tickets."""
    shared = [(exact_copy(text), label) for text, label in training_rows[:exact]]
    shared += [
        (near_copy(text), label) for text, label in training_rows[len(training_rows) - near :]
    ]
    fresh = tickets(count - len(shared) - 1, seed=seed, first_number=1_000_000)
    return [*shared, (HOSTILE, "intent_refund"), *fresh]


def held_out_world(
    project: Project,
    user: User,
    *,
    train: int = 2000,
    test: int = 400,
    exact: int = 20,
    near: int = 15,
) -> HeldOutWorld:
    training_rows = tickets(train, seed=1)
    training = dataset_version_freeze(
        dataset=approved_dataset(project, "tickets ✓ train", training_rows), user=user
    )
    test_rows = held_out_rows_sharing(training_rows, count=test, exact=exact, near=near)
    test_set = dataset_version_freeze(
        dataset=approved_dataset(project, "tickets ✓ held-out", test_rows),
        user=user,
        test_set=True,
    )
    return HeldOutWorld(training, test_set, training_rows, test_rows, exact, near)
