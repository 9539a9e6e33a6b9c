"""Many-label classification data that is not made to be easy: dozens of labels with 1 to 15
examples each (drawn, not chosen), long labels, labels with odd characters (markup, quotes,
emoji, right-to-left text, a tab, near-twins that differ in case or a letter), answers with
stray white space around the label, and inputs that share no wording, so a freeze's overlap
check passes whatever the split."""

from __future__ import annotations

import random
import string

from datasets.models import Dataset, Example, ExampleStatus
from datasets.services import dataset_contract_set

SYSTEM = "Classify the customer's message. Reply with the label only."
ODD_LABELS = [
    '<b>card</b> & "lost"',
    "top-up: failed (pending?)",
    "naïve façade — straße",
    "emoji 🙃 + 👩‍💻",
    "עברית: החזר",
    "tab\tinside",
    "'quoted' {0} %s \\n",
    "card payment",
    "Card payment",
    "card payments",
    "a/b\\c; DROP TABLE examples;--",
    "x" * 200,  # the longest label a contract takes
]


def label_names(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct labels: the odd ones above, then long wordy ones."""
    labels = ODD_LABELS[:count]
    while len(labels) < count:
        words = " ".join(
            "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))
            for _ in range(rng.randint(2, 18))
        )
        labels.append(f"{len(labels)} {words}"[:200])
    return labels


def drawn_counts(labels: list[str], rng: random.Random, low: int, high: int) -> dict[str, int]:
    return {label: rng.randint(low, high) for label in labels}


def sentence(rng: random.Random) -> str:
    """A message whose words are random letters: no two share enough shingles to look alike."""
    return " ".join(
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10)))
        for _ in range(rng.randint(8, 20))
    )


def labelled_chat(text: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": text},
        {"role": "assistant", "content": answer},
    ]


def labelled_examples(
    dataset: Dataset, counts: dict[str, int], rng: random.Random
) -> list[Example]:
    """Approved examples with these counts per label, in a shuffled order (so a label's examples
    are not neighbours by id); about one answer in five has white space around its label."""
    answers = [label for label, count in counts.items() for _ in range(count)]
    rng.shuffle(answers)
    return Example.objects.bulk_create(
        Example(
            dataset=dataset,
            messages=labelled_chat(sentence(rng), f" {answer}\n" if rng.random() < 0.2 else answer),
            status=ExampleStatus.APPROVED,
        )
        for answer in answers
    )


def label_set_dataset(
    dataset: Dataset, counts: dict[str, int], rng: random.Random
) -> list[Example]:
    """The dataset's label-set contract (every label in ``counts``) and its examples."""
    dataset_contract_set(dataset=dataset, contract={"kind": "label_set", "labels": list(counts)})
    return labelled_examples(dataset, counts, rng)
