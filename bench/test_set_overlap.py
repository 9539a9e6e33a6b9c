"""How long a held-out test set's overlap check takes (``datasets.test_sets``), as the freeze
runs it: a test set of ``--test`` items against ``--versions`` training versions of ``--train``
items each, rows in a scratch Postgres database (beside DATABASE_URL's, dropped afterwards).

    python bench/test_set_overlap.py [--train 5000] [--test 5000] [--versions 1] [--repeats 3]

Data: generated support tickets with odd characters (several scripts, emoji, right-to-left
text, markup, quotes, tabs), each one unique; the test set repeats ``--shared`` training inputs
exactly (another case and spacing) and as many nearly (one word added).

Timed, median of ``--repeats``: the test set's whole freeze (``freeze_s``: approved examples
read, hashed, the contract checked, items written and the overlap check), the check alone
(``check_s``: ``overlaps_record``, rows read from Postgres included; ``read_s`` is the
reading of the rows alone) and, after it, a new training version's freeze (``training_freeze_s``),
which checks itself against every test set frozen by then (``test_sets_checked_by_it``).
Baseline in the same run: the same test set frozen
without the check (``freeze_without_check_s``), so ``check_share`` is what the check adds to a
freeze. The last line is key=value.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root

from bench.databases import in_scratch_django_database  # noqa: E402

OPENERS = [
    "Bonjour l'équipe,",
    "Hallo Support-Team — dringend!",
    "你好，我的订单有问题：",
    "مرحبا، لدي مشكلة",
    "שלום, ההזמנה שלי",
    "Hi 👋🏽 quick one:",
    '"Urgent" <b>please</b> &amp; thanks:',
    "Olá!\tTenho uma dúvida:",
    "Привет! Вопрос по счёту:",
    "こんにちは、請求について",
]
SYLLABLES = [
    "ka", "lo", "mé", "tra", "zü", "ør", "ñi", "pa", "sø", "vé", "qu", "xi", "bå", "dé", "fi",
    "gö", "hu", "jä", "ku", "ly", "mø", "ne", "ço", "pi", "rå", "st", "tu", "ül", "wa", "ye",
]  # fmt: skip
LABELS = [f"intent_{name}" for name in ("refund", "login", "export", "invoice", "delete")] + [
    f"intent_other_{i}" for i in range(45)
]


def vocabulary(seed: int = 7, size: int = 4000) -> list[str]:
    rng = random.Random(seed)
    words = {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(size)}
    return sorted(words)


def ticket_text(rng: random.Random, number: int, words: list[str]) -> str:
    """One ticket: an opener in some script, 18 to 32 words, and its number (so no two
    tickets are alike)."""
    body = " ".join(rng.choice(words) for _ in range(rng.randint(18, 32)))
    return f"{rng.choice(OPENERS)} {body} (ticket №{number})"


def tickets(count: int, *, seed: int, first_number: int = 0) -> list[tuple[str, str]]:
    """``count`` (input, label) pairs with odd characters, unique inputs, 50 labels."""
    rng = random.Random(seed)
    words = vocabulary()
    return [(ticket_text(rng, first_number + i, words), rng.choice(LABELS)) for i in range(count)]


def exact_copy(text: str) -> str:
    """The same input as the overlap check sees it: another case, other spacing."""
    return "  " + text.upper().replace(" ", "   ") + "\n"


def near_copy(text: str) -> str:
    """One word added at the end: a near-duplicate (Jaccard over 0.9 for 18+ words)."""
    return f"{text} bitte"


def messages(text: str, label: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Classify the ticket; answer with one intent label."},
        {"role": "user", "content": text},
        {"role": "assistant", "content": label},
    ]


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def run(args: argparse.Namespace) -> dict[str, object]:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    import datasets.services
    from datasets.models import Dataset, DatasetVersion, Example
    from datasets.services import dataset_version_freeze
    from datasets.test_sets import _test_side, _training_inputs, overlaps_record
    from ftportal.models import Project

    call_command("migrate", verbosity=0)
    user = User.objects.create_user(username="bench")
    project = Project.objects.create(name="Test set bench")

    def dataset_of(name: str, rows: list[tuple[str, str]]) -> Dataset:
        dataset = Dataset.objects.create(project=project, name=name)
        Example.objects.bulk_create(
            (
                Example(dataset=dataset, messages=messages(text, label), status="approved")
                for text, label in rows
            ),
            batch_size=2000,
        )
        return dataset

    training_rows = tickets(args.train, seed=1)
    for index in range(args.versions):
        # Versions of one dataset, each with a few hundred more examples: they share most inputs.
        extra = tickets(300 * index, seed=100 + index, first_number=10_000_000 * (index + 1))
        dataset_version_freeze(
            dataset=dataset_of(f"train-{index}", training_rows + extra), user=user, resplit=True
        )
    shared = training_rows[: args.shared]
    test_rows = (
        [(exact_copy(text), label) for text, label in shared]
        + [(near_copy(text), label) for text, label in training_rows[-args.shared :]]
        + tickets(args.test - 2 * args.shared, seed=2, first_number=1_000_000)
    )
    test_dataset = dataset_of("held-out", test_rows)

    def freeze_test_set() -> DatasetVersion:
        return dataset_version_freeze(dataset=test_dataset, user=user, test_set=True)

    def freeze_without_check() -> DatasetVersion:
        saved = datasets.services.overlaps_after_freeze
        datasets.services.overlaps_after_freeze = lambda version: None
        try:
            return freeze_test_set()
        finally:
            datasets.services.overlaps_after_freeze = saved

    def read_both(test_set: DatasetVersion, version_ids: list[int]) -> None:
        _test_side(test_set)
        _training_inputs(version_ids)

    with_check, without_check, checks, reads = [], [], [], []
    test_set = None
    for _ in range(args.repeats):
        seconds, _unchecked = timed(freeze_without_check)
        without_check.append(seconds)
        seconds, test_set = timed(freeze_test_set)
        with_check.append(seconds)
        seconds, _ = timed(partial(overlaps_record, test_set=test_set))
        checks.append(seconds)
        version_ids = [e["version"] for e in test_set.test_overlaps["versions"]]
        seconds, _ = timed(partial(read_both, test_set, version_ids))
        reads.append(seconds)
    assert test_set is not None
    first = test_set.test_overlaps["versions"][0]
    expected = args.shared
    assert first["exact"] >= expected and first["near"] >= expected, first
    later = dataset_of("train-later", tickets(args.train, seed=3, first_number=5_000_000))
    test_sets = DatasetVersion.objects.filter(is_test_set=True).count()
    training_freeze_s, _ = timed(lambda: dataset_version_freeze(dataset=later, user=user))
    freeze_s = statistics.median(with_check)
    without_s = statistics.median(without_check)
    return {
        "train": args.train,
        "test": args.test,
        "versions": args.versions,
        "exact": first["exact"],
        "near": first["near"],
        "freeze_s": round(freeze_s, 2),
        "freeze_without_check_s": round(without_s, 2),
        "check_s": round(statistics.median(checks), 2),
        "read_s": round(statistics.median(reads), 2),
        "training_freeze_s": round(training_freeze_s, 2),
        "test_sets_checked_by_it": test_sets,
        "check_share": round((freeze_s - without_s) / freeze_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--test", type=int, default=5000)
    parser.add_argument("--versions", type=int, default=1)
    parser.add_argument("--shared", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, object] = {}
    in_scratch_django_database("ftportal_bench_test_sets", lambda: figures.update(run(args)))
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
