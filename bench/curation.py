"""Curation at scale: 100,000 generated support tickets imported into a throwaway Postgres
database, then validated, token-counted and checked for exact and near-duplicates; and our
batched validation + token counting against a plain per-example implementation of the same
checks (the OpenAI cookbook's approach), both in this run.

    python bench/curation.py [--examples 100000] [--repeats 3] [--tokenizers local,o200k_base]

Targets (issue 3): the whole pipeline in at most 60 s on a 2-core machine; validation with token
counting at least 3x faster than the per-example baseline. The import runs once (it is the
slow, large part); the other parts run ``--repeats`` times, alternating with the baseline so
background load hits both alike, and medians are printed. The last line is key=value.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root

from bench.databases import in_scratch_django_database  # noqa: E402

SYSTEM = (
    "You triage support tickets for Northwind Cloud. Reply with JSON only, with the keys "
    '"category" (one of: billing, bug, account, feature_request) and "priority" '
    "(one of: low, medium, high)."
)
NAMES = [
    "Amara",
    "Sean",
    "Priya",
    "Jonas",
    "Mei",
    "Carlos",
    "Fatima",
    "Olu",
    "Ines",
    "Tomasz",
    "Hannah",
    "Ravi",
    "Chloe",
    "Diego",
    "Yuki",
    "Sven",
    "Leila",
    "Marco",
    "Aisha",
    "Bram",
]
PRODUCTS = [
    "Compute",
    "Storage",
    "Backups",
    "DNS",
    "Load Balancer",
    "Postgres",
    "Object Store",
    "Kubernetes",
    "CDN",
    "Monitoring",
    "Mail",
    "VPN",
]
REGIONS = ["Sydney", "Frankfurt", "Virginia", "Tokyo", "London", "Sao Paulo", "Mumbai"]
SENTENCES: dict[str, list[str]] = {
    "billing": [
        "Our card was charged ${amount} twice for invoice {order}.",
        "The invoice for {month} shows {product} usage we never had.",
        "We downgraded to the Team plan but still pay the Business price.",
        "Can you send a corrected invoice with our VAT number on it?",
        "The annual discount we were promised is missing from the last bill.",
        "A refund of ${amount} was approved on the {day}th but never arrived.",
        "Why did the {product} line item jump by ${amount} this month?",
        "Please move billing to a different credit card ending in {last4}.",
        "We were billed for {count} seats although only {count2} people use it.",
        "The payment failed and now the account shows a warning banner.",
        "Our finance team needs invoices as PDF instead of HTML e-mails.",
        "Tax was added twice on order {order}.",
        "We cancelled {product} in {month} and were still charged.",
        "Is there a nonprofit discount for the Team plan?",
        "The currency on our invoices switched from EUR to USD.",
    ],
    "bug": [
        "{product} in {region} has returned 502 errors for {count} minutes.",
        "None of our servers in {region} answer ping or SSH since {time}.",
        "The dashboard graph for {product} stays empty after the last release.",
        "Uploading files larger than {count} MB to {product} fails halfway.",
        "The API returns 500 when we list more than {count2} objects.",
        "Scheduled backups did not run last night in {region}.",
        "DNS changes take hours to propagate instead of minutes.",
        "The CLI crashes with a stack trace when we pass --region {region}.",
        "Our {product} cluster restarts every {count} minutes without a reason.",
        "Latency to {region} went from 20 ms to {count2} ms this morning.",
        "Search in the console does not find resources created today.",
        "Two-factor codes are rejected although the phone clock is correct.",
        "The status page says all is well but {product} is clearly down.",
        "Webhooks for {product} are delivered twice.",
        "Exported CSV files are missing the last {count} rows.",
    ],
    "account": [
        "I cannot log in since my password reset on the {day}th.",
        "Please add {name2} as an admin of our organisation.",
        "We need to transfer ownership of the account to {name2}.",
        "My account is locked after too many login attempts.",
        "How do we enable single sign-on with our identity provider?",
        "Please delete the user {name2}, who left the company.",
        "The invitation e-mail to our new colleague never arrived.",
        "I changed my e-mail address and now I cannot verify it.",
        "Can we merge our two organisations into one account?",
        "We lost the device with our recovery codes.",
        "Please close our old test account from {month}.",
        "The API key we created yesterday shows as revoked.",
        "Our audit log does not show logins from {region}.",
        "How can I rename our organisation?",
        "I need a copy of all personal data you hold about me.",
    ],
    "feature_request": [
        "Please consider a dark mode for the mobile app.",
        "It would help to export {product} metrics to CSV.",
        "Could {product} support IPv6 in {region}?",
        "We would love tags on {product} resources.",
        "Please add a Terraform provider for {product}.",
        "A weekly cost report by e-mail would save us time.",
        "Can you offer a {region} region for {product}?",
        "Please let us schedule {product} maintenance windows.",
        "We would like more granular roles than admin and member.",
        "An audit log export to our SIEM would be great.",
        "Please support hardware security keys for login.",
        "Could the console remember the last selected region?",
        "We would pay for a higher API rate limit tier.",
        "Please add Slack notifications for failed backups.",
        "A read-only mode for auditors would help us.",
    ],
}
# A free-form detail sentence per ticket, so tickets on one topic still differ in wording.
OPENERS = [
    "Also, our",
    "Meanwhile the",
    "Since then the",
    "FYI, the",
    "Oddly, the",
    "Today our",
    "Our team says the",
    "Worse, the",
    "As before, the",
    "Right now the",
]
ADJECTIVES = [
    "staging",
    "production",
    "new",
    "old",
    "shared",
    "main",
    "backup",
    "test",
    "regional",
    "internal",
    "public",
    "primary",
    "secondary",
    "nightly",
    "legacy",
]
NOUNS = [
    "dashboard",
    "cluster",
    "invoice page",
    "login screen",
    "API gateway",
    "database",
    "build pipeline",
    "report",
    "mobile app",
    "admin panel",
    "webhook",
    "bucket",
    "cron job",
    "status page",
    "support portal",
    "SSO setup",
    "firewall",
    "mail relay",
]
VERBS = [
    "keeps timing out",
    "looks wrong",
    "is very slow",
    "shows an error",
    "went blank",
    "stopped syncing",
    "logs us out",
    "charges twice",
    "misses data",
    "needs a restart",
    "rejects our key",
    "shows old numbers",
    "crashed twice",
    "is unreachable",
]
WHEN = [
    "since Monday",
    "every morning",
    "after the update",
    "on weekends",
    "for a week",
    "since the migration",
    "at peak hours",
    "since yesterday",
    "all day",
    "now and then",
    "after each deploy",
    "since we moved regions",
]
PRIORITIES = ["low", "medium", "high"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August"]


def ticket(rng: random.Random) -> tuple[str, str]:
    category = rng.choice(list(SENTENCES))
    fill = {
        "amount": f"{rng.randint(5, 2000)}.{rng.randint(0, 99):02d}",
        "order": f"INV-{rng.randint(10000, 99999)}",
        "month": rng.choice(MONTHS),
        "product": rng.choice(PRODUCTS),
        "region": rng.choice(REGIONS),
        "day": rng.randint(1, 28),
        "count": rng.randint(2, 90),
        "count2": rng.randint(2, 900),
        "last4": rng.randint(1000, 9999),
        "time": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        "name2": rng.choice(NAMES),
    }
    picked = rng.sample(SENTENCES[category], rng.randint(2, 4))
    detail = (
        f"{rng.choice(OPENERS)} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} "
        f"{rng.choice(VERBS)} {rng.choice(WHEN)}."
    )
    sentences = [sentence.format(**fill) for sentence in picked]
    sentences.insert(rng.randint(0, len(sentences)), detail)
    body = " ".join(sentences)
    subject = picked[0].format(**fill).rstrip(".?")[:60]
    name = rng.choice(NAMES)
    text = f"Subject: {subject}\n\nHi Northwind team,\n\n{body}\n\nThanks,\n{name}"
    answer = json.dumps({"category": category, "priority": rng.choice(PRIORITIES)})
    return text, answer


def generate(count: int, seed: int = 7) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Tickets with injected exact duplicates (2 %), near-duplicates (2 %) and PII (1 %)."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    injected = {"exact_duplicates": 0, "near_duplicates": 0, "pii": 0}
    for _ in range(count):
        roll = rng.random()
        if records and roll < 0.02:
            source = rng.choice(records)["messages"]
            copy = [dict(m) for m in source]
            copy[1]["content"] = copy[1]["content"].upper()  # same after normalisation
            records.append({"messages": copy})
            injected["exact_duplicates"] += 1
            continue
        if records and roll < 0.04:
            source = rng.choice(records)["messages"]
            copy = [dict(m) for m in source]
            words = copy[1]["content"].split(" ")
            words[-3] = "again"  # one word changed near the end: Jaccard ~0.9
            copy[1]["content"] = " ".join(words)
            records.append({"messages": copy})
            injected["near_duplicates"] += 1
            continue
        text, answer = ticket(rng)
        if roll < 0.05:
            text += rng.choice(
                [
                    "\nReach me at alex.morgan@example.com.",
                    "\nCall me on +44 20 7946 0958.",
                    "\nThe card was 4111 1111 1111 1111.",
                ]
            )
            injected["pii"] += 1
        records.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return records, injected


# -- the throwaway database -------------------------------------------------------------------


def import_examples(*, dataset: Any, data: bytes, user: Any) -> int:
    """The import step: the streaming importer reading a file, as a stored upload is read."""
    import tempfile

    from datasets.imports.services import examples_import_file

    with tempfile.TemporaryFile() as stream:
        stream.write(data)
        stream.seek(0)
        batch = examples_import_file(
            dataset=dataset, stream=stream, filename="bench.jsonl", size=len(data), user=user
        )
    return int(batch.imported_count)


# -- the per-example baseline (the cookbook's approach) ---------------------------------------


def baseline_validate_and_count(
    conversations: Sequence[Any],
    encode: Callable[[str], Sequence[int]],
    template: Any,
    context_window: int,
    *,
    encode_roles: bool,
) -> tuple[set[tuple[int, str]], list[int]]:
    """The cookbook's data-preparation loop: per example, check each message in Python, count
    tokens by encoding one value at a time (num_tokens_from_messages), then the assistant's
    tokens in a second pass (num_assistant_tokens_from_messages).

    ``encode_roles``: the cookbook encodes every value of a message, the role included, and
    adds 3 per message (OpenAI's format); for the local model the measured template overhead
    already holds the role header, so only the content is encoded.
    """
    issues: set[tuple[int, str]] = set()
    totals: list[int] = []
    answer_tokens: list[int] = []
    for index, messages in enumerate(conversations):
        if not isinstance(messages, list) or not messages:
            issues.add((index, "missing_messages"))
            totals.append(0)
            continue
        for message in messages:
            if not isinstance(message, dict):
                issues.add((index, "missing_messages"))
                continue
            if any(key not in ("role", "content", "name", "weight") for key in message):
                issues.add((index, "unknown_key"))
            if message.get("role") not in ("system", "user", "assistant"):
                issues.add((index, "unknown_role"))
            content = message.get("content")
            if not isinstance(content, str) or not content.strip():
                issues.add((index, "empty_content"))
        roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
        if roles[-1] != "assistant":
            issues.add((index, "no_assistant_answer"))
        if all(r in ("system", "user", "assistant") for r in roles):
            start = 1 if roles[0] == "system" else 0
            for position in range(start, len(roles)):
                expected = "user" if (position - start) % 2 == 0 else "assistant"
                if roles[position] != expected:
                    issues.add((index, "role_order"))
                    break
        # num_tokens_from_messages
        total = template.per_conversation
        if roles[0] != "system":
            total += template.implicit_system
        for message in messages:
            if not isinstance(message, dict):
                continue
            if encode_roles:
                total += template.message(message.get("role")) - len(encode(message["role"]))
                for _key, value in message.items():
                    if isinstance(value, str):
                        total += len(encode(value))
            else:
                total += template.message(message.get("role"))
                content = message.get("content")
                if isinstance(content, str):
                    total += len(encode(content))
        totals.append(total)
        if total > context_window:
            issues.add((index, "over_context"))
        # num_assistant_tokens_from_messages
        answer_tokens.append(
            sum(len(encode(m["content"])) for m in messages if m.get("role") == "assistant")
        )
    return issues, totals


def ours_validate_and_count(
    conversations: Sequence[Any], counter: Any, context_window: int
) -> tuple[set[tuple[int, str]], list[int]]:
    from datasets.quality.tokens import count_conversations
    from datasets.quality.validation import validate_conversations

    tokens = count_conversations(conversations, counter)
    issues = validate_conversations(
        conversations, total_tokens=tokens.total, context_window=context_window
    )
    return {(i.index, i.kind) for i in issues}, tokens.total.tolist()


def duplicates(conversations: Sequence[Any]) -> tuple[list[Any], list[Any], int]:
    from datasets.quality import analyzers

    parts = analyzers.split_parts(conversations)
    signatures = analyzers.conversation_signatures(parts)
    exact = analyzers.exact_duplicates(parts, [str(i) for i in range(len(conversations))])
    near, pair_count = analyzers.near_duplicates(
        parts, signatures, [str(i) for i in range(len(conversations))]
    )
    return exact, near, pair_count


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--compare-examples",
        type=int,
        default=20_000,
        help="examples in the repeated ours-vs-baseline comparison (the baseline is slow)",
    )
    parser.add_argument("--tokenizers", default="local,o200k_base")
    parser.add_argument("--context-window", type=int, default=8192)
    args = parser.parse_args()

    records, injected = generate(args.examples)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    print(f"generated {len(records)} examples, {len(data) / 1e6:.1f} MB; injected {injected}")

    in_scratch_django_database("ftportal_bench", lambda: run(args, data, injected))


def tokenizer_counters(names: Sequence[str], cache_dir: Path) -> dict[str, Any]:
    """A token counter per name; "local" is the base model's own tokenizer, prepared in
    ``cache_dir`` first if it is not there yet (not timed)."""
    from bench.prepare import prepared_base_model
    from datasets.quality.tokens import local_counter, tiktoken_counter

    return {
        name: local_counter(prepared_base_model(cache_dir))
        if name == "local"
        else tiktoken_counter(name)
        for name in names
    }


def run(args: argparse.Namespace, data: bytes, injected: dict[str, int]) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from datasets.models import Dataset, Example
    from ftportal.models import Project

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"migrated the throwaway database in {time.perf_counter() - started:.1f} s (not timed)")
    user = User.objects.create_user(username="bench")
    dataset = Dataset.objects.create(project=Project.objects.create(name="bench"), name="bench")

    counters = tokenizer_counters(args.tokenizers.split(","), settings.FTPORTAL_MODEL_CACHE)
    first = next(iter(counters.values()))
    first.lengths(["warm up"])  # tokenizer files load once per process

    # (a) the pipeline: import, load, validate + count, exact + near duplicates.
    import_s, imported = timed(lambda: import_examples(dataset=dataset, data=data, user=user))
    load_s, conversations = timed(
        lambda: list(Example.objects.filter(dataset=dataset).values_list("messages", flat=True))
    )
    assert imported == len(conversations) == args.examples
    validate_s, (our_issues, our_totals) = timed(
        lambda: ours_validate_and_count(conversations, first, args.context_window)
    )
    dedupe_s, (exact, near, near_pairs) = timed(lambda: duplicates(conversations))
    total_s = import_s + load_s + validate_s + dedupe_s
    print(
        f"pipeline ({first.name}): import {import_s:.1f} s, load {load_s:.1f} s, validate+tokens "
        f"{validate_s:.1f} s, exact+near duplicates {dedupe_s:.1f} s; total {total_s:.1f} s "
        "(target <= 60 s)"
    )
    exact_examples = len({i.index for i in exact})
    near_examples = len({i.index for i in near})
    print(
        f"found {exact_examples} examples in exact-duplicate groups (injected "
        f"{injected['exact_duplicates']} copies), {near_pairs} near-duplicate pairs over "
        f"{near_examples} examples (injected {injected['near_duplicates']})"
    )

    # Repeat the smaller parts for medians.
    dedupe_times = [dedupe_s]
    for _ in range(args.repeats - 1):
        dedupe_times.append(timed(lambda: duplicates(conversations))[0])

    # (b) validation + token counting against the per-example baseline, same data, same run.
    sample = conversations[: args.compare_examples]
    speedups: dict[str, float] = {}
    for name, counter in counters.items():
        encode = _single_encoder(counter, name, settings)
        ours_times: list[float] = []
        base_times: list[float] = []

        def ours(counter: Any = counter) -> tuple[set[tuple[int, str]], list[int]]:
            return ours_validate_and_count(sample, counter, args.context_window)

        def base(
            counter: Any = counter, encode: Any = encode, name: str = name
        ) -> tuple[set[tuple[int, str]], list[int]]:
            return baseline_validate_and_count(
                sample,
                encode,
                counter.template,
                args.context_window,
                encode_roles=name != "local",
            )

        for repeat in range(args.repeats):
            # Alternate which goes first, so background load hits both alike.
            for which in ("ours", "base") if repeat % 2 == 0 else ("base", "ours"):
                if which == "ours":
                    seconds, ours_result = timed(ours)
                    ours_times.append(seconds)
                else:
                    seconds, base_result = timed(base)
                    base_times.append(seconds)
        # Same checks, same counts: the comparison is like for like.
        assert ours_result[1] == base_result[1], "token totals differ from the baseline"
        assert ours_result[0] == base_result[0], "issues differ from the baseline"
        ours_median = statistics.median(ours_times)
        base_median = statistics.median(base_times)
        speedups[name] = base_median / ours_median
        print(
            f"validate+tokens ({counter.name}, {len(sample)} examples): ours median "
            f"{ours_median:.2f} s, per-example "
            f"baseline median {base_median:.2f} s over {args.repeats} runs: "
            f"{speedups[name]:.1f}x (target >= 3x)"
        )
    print(f"exact+near duplicates: median {statistics.median(dedupe_times):.2f} s")
    figures = {
        "examples": args.examples,
        "total_s": round(total_s, 1),
        "import_s": round(import_s, 1),
        "validate_tokens_s": round(validate_s, 2),
        "dedupe_s": round(statistics.median(dedupe_times), 2),
        **{
            ("validate_tokens_speedup" if n == "local" else f"validate_tokens_speedup_{n}"): round(
                s, 1
            )
            for n, s in speedups.items()
        },
        "near_dup_pairs": near_pairs,
        "exact_dup_examples": exact_examples,
    }
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


def _single_encoder(counter: Any, name: str, settings: Any) -> Callable[[str], Sequence[int]]:
    """One-string-at-a-time encode with the same tokenizer the batched counter uses."""
    if name == "local":
        from tokenizers import Tokenizer

        from bench.prepare import prepared_base_model

        path = prepared_base_model(settings.FTPORTAL_MODEL_CACHE) / "tokenizer.json"
        tokenizer = Tokenizer.from_file(str(path))
        return lambda text: tokenizer.encode(text, add_special_tokens=False).ids
    from datasets.quality.tokens import tiktoken_encoding

    encoding = tiktoken_encoding(name)
    return encoding.encode_ordinary


if __name__ == "__main__":
    main()
