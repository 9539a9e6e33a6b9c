"""What checking answers against an answer contract costs, beside the cheapest possible check.

    python bench/contracts.py [--answers 100000]

Generates ticket-triage answers (one in ten broken: not JSON, a value outside an enum, a
misspelled key), then times, in the same run:

- baseline: ``json.loads`` of every answer, the least any JSON check must do;
- json_schema: ``contract_violation`` with the demo's JSON Schema (enums, required keys, no
  other keys), called afresh for every answer (the review card and evaluation do);
- label_set and regex: the same answers against a label set and a whole-answer pattern;
- analyzer and import_checker: the quality analyzer, and ``ContractCheck`` as import, freeze
  and the queue filter use it, over the same answers: each distinct answer is checked once, so
  a repeated answer costs a dictionary lookup.

Nothing here touches the database: it measures the check itself. The last line is key=value
pairs with microseconds per answer and each check's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import numpy as np  # noqa: E402

from datasets.contracts import ContractCheck, clean_contract, contract_violation  # noqa: E402
from datasets.quality.analyzers import contract_violations, split_parts  # noqa: E402

CATEGORIES = ["billing", "bug", "account", "feature_request"]
PRIORITIES = ["low", "medium", "high"]
SCHEMA_CONTRACT = {
    "kind": "json_schema",
    "schema": {
        "type": "object",
        "properties": {"category": {"enum": CATEGORIES}, "priority": {"enum": PRIORITIES}},
        "required": ["category", "priority"],
        "additionalProperties": False,
    },
}
SEED = 7


def answers(count: int) -> list[str]:
    """Triage answers as a dataset holds them: few distinct values, one in ten broken."""
    rng = random.Random(SEED)
    made = []
    for i in range(count):
        value = {"category": rng.choice(CATEGORIES), "priority": rng.choice(PRIORITIES)}
        roll = rng.random()
        if roll < 0.03:
            made.append(f"Category {value['category']}, ticket {i}")
            continue
        if roll < 0.06:
            value["priority"] = "urgent"
        elif roll < 0.10:
            value["categroy"] = value.pop("category")
        made.append(json.dumps(value) + " " * (i % 7))
    return made


def timed(check: Callable[[str], object], items: list[str]) -> float:
    start = time.perf_counter()
    for item in items:
        check(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--answers", type=int, default=100_000)
    args = parser.parse_args()
    items = answers(args.answers)
    schema = clean_contract(SCHEMA_CONTRACT)
    labels = clean_contract({"kind": "label_set", "labels": CATEGORIES})
    pattern = clean_contract({"kind": "regex", "pattern": r'\{"category": "\w+", .*\}\s*'})

    def loads(text: str) -> object:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None

    baseline = timed(loads, items)
    results = {
        "json_schema": timed(lambda a: contract_violation(schema, a), items),
        "label_set": timed(lambda a: contract_violation(labels, a), items),
        "regex": timed(lambda a: contract_violation(pattern, a), items),
    }
    conversations = [[{"role": "assistant", "content": a}] for a in items]
    parts = split_parts(conversations)
    has_answer = np.ones(len(items), dtype=bool)
    start = time.perf_counter()
    broken = contract_violations(parts, has_answer, schema)
    results["analyzer"] = (time.perf_counter() - start) / len(items) * 1e6
    results["import_checker"] = timed(ContractCheck(schema).violation, items)
    print(f"{len(items):,} answers, {len(broken):,} break the JSON Schema contract")
    print(f"{'check':<12} {'us/answer':>10} {'x baseline':>11}")
    print(f"{'json.loads':<12} {baseline:>10.2f} {1.0:>11.1f}")
    for name, value in results.items():
        print(f"{name:<12} {value:>10.2f} {value / baseline:>11.1f}")
    pairs = [f"answers={len(items)}", f"broken={len(broken)}", f"baseline_us={baseline:.2f}"]
    for name, value in results.items():
        pairs += [f"{name}_us={value:.2f}", f"{name}_ratio={value / baseline:.1f}"]
    print(" ".join(pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
