"""Finished evaluations of many-label tasks built straight in the database, for the label
metrics' tests: awkward labels (quotes, markup, accents, up to 200 characters, near twins),
skewed label frequencies, answers that confuse, invent and mis-spell labels, and optional
confidences. The summaries and the report are made by the code the worker uses."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.utils import timezone

from catalog.models import BaseModel
from datasets.contracts import LABEL_SET, MAX_LABEL_CHARS, clean_contract
from datasets.models import Dataset, DatasetVersion, DatasetVersionExample, Split
from evaluation.models import Candidate, CandidateKind, EvalResult, EvalRun, EvalSplit, EvalStatus
from evaluation.report import candidate_summary_of, run_report
from evaluation.scoring import Checks, score_answer
from ftportal.models import Project

SPECIAL_LABELS = [
    '"quoted" request',
    "it's <b>bold</b> & brash",
    "<script>alert('label')</script>",
    "café, résumé, naïve",
    "Ünïcödé – déjà vu",
    "{{ not_a_variable }} {% not_a_tag %}",
    "emoji 🎉 label",
    "'single' quotes",
]


def awkward_labels(count: int, *, seed: int = 0) -> list[str]:
    """``count`` distinct labels: the special ones above, then long ones sharing a long prefix
    (cut short on an axis they look alike) up to the contract's 200 characters, then plain
    ones that differ by a digit."""
    rng = random.Random(seed)
    labels = list(SPECIAL_LABELS)
    prefix = "card payment declined at checkout because the issuing bank reported that "
    for i in range(12):
        tail = f"reason {i}: " + " ".join(
            rng.choice(["limit", "fraud", "expired", "cvc"]) for _ in range(30)
        )
        labels.append((prefix + tail)[: MAX_LABEL_CHARS - i].strip())
    i = 0
    while len(labels) < count:
        labels.append(f"intent_{i:03d}_{rng.choice(['card', 'transfer', 'topup', 'refund'])}")
        i += 1
    labels = labels[:count]
    assert len(set(labels)) == len(labels) == count
    return labels


def skewed_expected(labels: Sequence[str], items: int, *, seed: int = 1) -> list[str]:
    """Expected labels with Zipf-like frequencies (a few common labels, many rare ones), every
    label at least once."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(labels))]
    drawn = rng.choices(list(labels), weights=weights, k=items - len(labels))
    expected = list(labels) + drawn
    rng.shuffle(expected)
    return expected


@dataclass(frozen=True)
class Answers:
    """What a candidate answered per item, and its confidence per item (None: none)."""

    label: str
    outputs: list[str]
    confidences: list[float | None] | None = None
    abstain_below: float | None = None


def noisy_answers(
    label: str,
    labels: Sequence[str],
    expected: Sequence[str],
    *,
    right: float,
    invalid: float,
    seed: int,
    confident: bool = False,
) -> Answers:
    """Right with probability ``right``; else invalid with probability ``invalid`` (two labels'
    words glued together, or a label with a trailing full stop), else a label that is confused
    with this one (each label has two look-alikes, so confusions gather in pairs), and now and
    then a right answer wrapped in whitespace (still the label). With ``confident``, each answer
    has a confidence that runs higher for right answers, as label scoring's would."""
    rng = random.Random(seed)
    look_alikes = {name: rng.sample(list(labels), 2) for name in labels}
    outputs: list[str] = []
    confidences: list[float | None] = []
    for truth in expected:
        draw = rng.random()
        if draw < right:
            output = f"  {truth}\n" if rng.random() < 0.05 else truth
            confidence = rng.uniform(0.35, 1.0)
        elif draw < right + invalid:
            a, b = rng.sample(list(labels), 2)
            output = truth + "." if rng.random() < 0.3 else f"{a.split()[0]} {b.split()[-1]}"
            confidence = rng.uniform(0.0, 0.5)
        else:
            output = rng.choice(look_alikes[truth])
            confidence = rng.uniform(0.0, 0.8)
        outputs.append(output)
        confidences.append(round(confidence, 4))
    return Answers(label, outputs, confidences if confident else None)


def labelled_run(
    *,
    project: Project,
    user: User,
    base_model: BaseModel,
    labels: Sequence[str] | None,
    expected: Sequence[str],
    candidates: Sequence[Answers],
) -> EvalRun:
    """A finished run on a test set whose expected answers are ``expected``, under a label-set
    contract of ``labels`` (None: no contract), each candidate answering as given."""
    # Cleaned as the dataset page and API clean it.
    contract = clean_contract({"kind": LABEL_SET, "labels": list(labels)} if labels else {})
    dataset = Dataset.objects.create(
        project=project, name=f"intents-{Dataset.objects.count()}", answer_contract=contract
    )
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        content_hash=f"{dataset.pk:064d}",
        seed=0,
        validation_fraction=0.0,
        example_count=len(expected),
        train_count=0,
        validation_count=0,
        answer_contract=contract,
        is_test_set=True,
        created_by=user,
    )
    items = DatasetVersionExample.objects.bulk_create(
        DatasetVersionExample(
            version=version,
            position=position,
            split=Split.TEST,
            messages=[
                {"role": "user", "content": f"Customer message number {position}"},
                {"role": "assistant", "content": truth},
            ],
        )
        for position, truth in enumerate(expected)
    )
    run = EvalRun.objects.create(
        project=project,
        dataset_version=version,
        split=EvalSplit.ALL,
        status=EvalStatus.SUCCEEDED,
        primary_metric="exact_match",
        created_by=user,
        finished_at=timezone.now(),
    )
    checks = Checks(contract=contract)
    for position, answers in enumerate(candidates):
        candidate = Candidate.objects.create(
            run=run,
            position=position,
            label=answers.label,
            kind=CandidateKind.BASE,
            base_model=base_model,
            label_scoring=answers.confidences is not None,
            abstain_below=answers.abstain_below,
        )
        confidences = answers.confidences or [None] * len(items)
        EvalResult.objects.bulk_create(
            EvalResult(
                candidate=candidate,
                item=item,
                output=output,
                latency_seconds=0.2,
                prompt_tokens=60,
                completion_tokens=4,
                confidence=confidence,
                scores=score_answer(output, truth, checks),
            )
            for item, truth, output, confidence in zip(
                items, expected, answers.outputs, confidences, strict=True
            )
        )
        candidate.metrics = candidate_summary_of(candidate)
        candidate.example_count = len(items)
        candidate.save()
    run.report = run_report(run)
    run.save()
    return run
