"""Quality analyzers: duplicates, near-duplicates, conflicting answers, length outliers,
very short answers, personal data, leftover markup and answers that break the contract.

Each analyzer takes the conversations (lists of {"role", "content"} dicts) and returns
``Issue`` rows; ``names`` (e.g. "example 12") are used in messages so a reviewer can find the
other member of a duplicate pair.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..contracts import ContractCheck
from . import minhash
from .findings import (
    CONFLICTING_ANSWER,
    CONTRACT_VIOLATION,
    ERROR,
    EXACT_DUPLICATE,
    LENGTH_OUTLIER,
    MARKUP,
    NEAR_DUPLICATE,
    PII_CARD,
    PII_EMAIL,
    PII_ID,
    PII_PHONE,
    SHORT_ANSWER,
    WARNING,
    Issue,
)

# Modified z-score (Iglewicz and Hoaglin): 0.6745 * (x - median) / MAD; beyond 3.5 is an outlier.
OUTLIER_Z = 3.5
MAD_SCALE = 0.6745
# Robust statistics on a handful of examples flag noise, so outliers need at least this many.
MIN_EXAMPLES_FOR_OUTLIERS = 10
# An answer under a quarter of the typical answer's tokens is "very short" (when answers are
# typically at least 8 tokens; label-style datasets have legitimately short answers).
SHORT_FRACTION = 0.25
SHORT_MIN_TYPICAL_TOKENS = 8
MIN_ANSWER_CHARS = 2
NAMES_IN_MESSAGE = 3


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, runs of whitespace collapsed: what "the same text" means."""
    if text.isascii():  # NFKC leaves ASCII alone, and casefold is lower() there
        return " ".join(text.lower().split())
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _content(message: object) -> str:
    if isinstance(message, dict):
        content = message.get("content")
        if isinstance(content, str):
            return content
    return ""


def _role(message: object) -> str:
    role = message.get("role") if isinstance(message, dict) else None
    return role if isinstance(role, str) else ""


@dataclass(frozen=True)
class Parts:
    """The pieces of each conversation the analyzers compare."""

    conversation_keys: list[str]  # normalised whole conversation (roles included)
    prompt_keys: list[str]  # normalised messages before the answer
    answer_keys: list[str]  # normalised final answer ("" when the last message is not one)
    answers: list[str]  # final answer as written
    user_texts: list[str]  # the user turns, for similarity (system prompts are shared)


def split_parts(conversations: Sequence[object]) -> Parts:
    conversation_keys: list[str] = []
    prompt_keys: list[str] = []
    answer_keys: list[str] = []
    answers: list[str] = []
    user_texts: list[str] = []
    # System prompts and answers repeat across a dataset: each distinct text is normalised once.
    normalised_cache: dict[str, str] = {}

    def normalised(text: str) -> str:
        found = normalised_cache.get(text)
        if found is None:
            found = normalised_cache[text] = normalize_text(text)
        return found

    for messages in conversations:
        items = messages if isinstance(messages, list) else []
        roles = [_role(m) for m in items]
        contents = [_content(m) for m in items]
        keys = [
            f"{role}\x1f{normalised(content)}"
            for role, content in zip(roles, contents, strict=True)
        ]
        has_answer = bool(items) and roles[-1] == "assistant"
        answer = contents[-1] if has_answer else ""
        conversation_keys.append("\x1e".join(keys))
        prompt_keys.append("\x1e".join(keys[:-1] if has_answer else keys))
        answer_keys.append(normalised(answer))
        answers.append(answer)
        user_texts.append(
            "\n".join(
                content for role, content in zip(roles, contents, strict=True) if role == "user"
            )
        )
    return Parts(conversation_keys, prompt_keys, answer_keys, answers, user_texts)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _name_list(names: Sequence[str], members: Sequence[int], exclude: int) -> str:
    others = [names[m] for m in members if m != exclude]
    shown = ", ".join(others[:NAMES_IN_MESSAGE])
    more = len(others) - NAMES_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")


def exact_duplicate_groups(keys: Sequence[str]) -> list[list[int]]:
    """Indices sharing one normalised key, for every key held by more than one conversation."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[key].append(index)
    return [members for members in groups.values() if len(members) > 1]


def exact_duplicates(parts: Parts, names: Sequence[str]) -> list[Issue]:
    issues: list[Issue] = []
    for members in exact_duplicate_groups(parts.conversation_keys):
        group_key = f"exact-{_digest(parts.conversation_keys[members[0]])}"
        for index in members:
            issues.append(
                Issue(
                    index,
                    EXACT_DUPLICATE,
                    WARNING,
                    f"The same conversation as {_name_list(names, members, index)} (after "
                    "normalising case, whitespace and unicode)",
                    group_key,
                )
            )
    return issues


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        root = item
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while item != root:  # path compression
            self.parent[item], item = root, self.parent.get(item, item)
        return root

    def union(self, left: int, right: int) -> None:
        a, b = self.find(left), self.find(right)
        # Roots are recorded too, so clusters() sees every member.
        self.parent.setdefault(a, a)
        self.parent.setdefault(b, b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def clusters(self) -> list[list[int]]:
        grouped: dict[int, list[int]] = defaultdict(list)
        for item in list(self.parent):
            grouped[self.find(item)].append(item)
        return [sorted(members) for members in grouped.values() if len(members) > 1]


def _representatives(keys: Sequence[str]) -> np.ndarray:
    """The first index of each distinct key: exact copies are compared once."""
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    return np.fromiter(first.values(), dtype=np.int64, count=len(first))


@dataclass(frozen=True)
class Signatures:
    """MinHash signatures of the user turns and of the answers; a conversation's signature is
    their element-wise minimum (the MinHash of the union of both shingle sets)."""

    prompt: np.ndarray
    answer: np.ndarray

    @property
    def conversation(self) -> np.ndarray:
        return np.minimum(self.prompt, self.answer)


def conversation_signatures(parts: Parts) -> Signatures:
    return Signatures(
        prompt=minhash.signatures(parts.user_texts), answer=minhash.signatures(parts.answers)
    )


def near_duplicate_pairs(
    parts: Parts, signatures: Signatures, *, threshold: float = minhash.DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of distinct (not exactly equal) conversations at estimated Jaccard >= threshold."""
    representatives = _representatives(parts.conversation_keys)
    pairs, similarity = minhash.similar_pairs(
        signatures.conversation[representatives], threshold=threshold
    )
    return representatives[pairs] if len(pairs) else pairs, similarity


def near_duplicates(
    parts: Parts, signatures: Signatures, names: Sequence[str]
) -> tuple[list[Issue], int]:
    """Near-duplicate findings and the number of verified pairs behind them."""
    pairs, similarity = near_duplicate_pairs(parts, signatures)
    best: dict[int, float] = {}
    clusters = _UnionFind()
    for (left, right), score in zip(pairs.tolist(), similarity.tolist(), strict=True):
        clusters.union(left, right)
        best[left] = max(best.get(left, 0.0), score)
        best[right] = max(best.get(right, 0.0), score)
    issues: list[Issue] = []
    for members in clusters.clusters():
        group_key = f"near-{_digest(parts.conversation_keys[members[0]])}"
        for index in members:
            issues.append(
                Issue(
                    index,
                    NEAR_DUPLICATE,
                    WARNING,
                    f"Nearly the same as {_name_list(names, members, index)} (about "
                    f"{best[index]:.0%} of word triples shared)",
                    group_key,
                )
            )
    return issues, len(pairs)


def conflicting_answers(parts: Parts, signatures: Signatures, names: Sequence[str]) -> list[Issue]:
    """The same or nearly the same input with different ideal answers: the model is taught
    two things at once."""
    clusters = _UnionFind()
    for members in exact_duplicate_groups(parts.prompt_keys):
        for other in members[1:]:
            clusters.union(members[0], other)
    representatives = _representatives(parts.prompt_keys)
    pairs, _ = minhash.similar_pairs(signatures.prompt[representatives])
    for left, right in (representatives[pairs] if len(pairs) else pairs).tolist():
        clusters.union(left, right)
    issues: list[Issue] = []
    for members in clusters.clusters():
        answered = [m for m in members if parts.answer_keys[m]]
        distinct = {parts.answer_keys[m] for m in answered}
        if len(distinct) < 2:
            continue
        group_key = f"conflict-{_digest(parts.prompt_keys[members[0]])}"
        for index in answered:
            others = [m for m in answered if parts.answer_keys[m] != parts.answer_keys[index]]
            issues.append(
                Issue(
                    index,
                    CONFLICTING_ANSWER,
                    WARNING,
                    f"The same or nearly the same input as {_name_list(names, others, index)}"
                    f" has a different answer ({len(distinct)} different answers in this "
                    "group)",
                    group_key,
                )
            )
    return issues


def robust_z_scores(values: np.ndarray) -> np.ndarray:
    """Modified z-scores from the median and the median absolute deviation (MAD); falls back
    to the mean absolute deviation when more than half the values are equal."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return values
    median = float(np.median(values))
    deviations = np.abs(values - median)
    mad = float(np.median(deviations))
    if mad > 0:
        return MAD_SCALE * (values - median) / mad
    mean_deviation = float(deviations.mean())
    if mean_deviation > 0:
        # 1.2533 = sqrt(pi/2) makes the mean absolute deviation comparable to a standard
        # deviation, as 1/0.6745 does for the MAD.
        return (values - median) / (1.2533 * mean_deviation)
    return np.zeros(len(values))


def length_outliers(answer_tokens: np.ndarray, has_answer: np.ndarray) -> list[Issue]:
    indices = np.flatnonzero(has_answer)
    if len(indices) < MIN_EXAMPLES_FOR_OUTLIERS:
        return []
    tokens = answer_tokens[indices]
    scores = robust_z_scores(tokens)
    median = float(np.median(tokens))
    issues: list[Issue] = []
    for position in np.flatnonzero(np.abs(scores) > OUTLIER_Z).tolist():
        index = int(indices[position])
        side = "longer" if scores[position] > 0 else "shorter"
        issues.append(
            Issue(
                index,
                LENGTH_OUTLIER,
                WARNING,
                f"The answer has {int(tokens[position])} tokens, far {side} than the typical "
                f"{median:.0f} (robust z-score {scores[position]:.1f})",
            )
        )
    return issues


def short_answers(
    answers: Sequence[str], answer_tokens: np.ndarray, has_answer: np.ndarray
) -> list[Issue]:
    indices = np.flatnonzero(has_answer)
    if len(indices) == 0:
        return []
    typical = float(np.median(answer_tokens[indices]))
    limit = SHORT_FRACTION * typical if typical >= SHORT_MIN_TYPICAL_TOKENS else 0.0
    issues: list[Issue] = []
    for index in indices.tolist():
        answer = answers[index]
        visible = len("".join(answer.split()))
        tokens = int(answer_tokens[index])
        if 0 < visible < MIN_ANSWER_CHARS or (visible and tokens < limit):
            issues.append(
                Issue(
                    index,
                    SHORT_ANSWER,
                    WARNING,
                    f"The answer is very short ({tokens} tokens, typical {typical:.0f}): "
                    f"{answer.strip()[:40]!r}",
                )
            )
    return issues


# -- personal data ---------------------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+./-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?"
    r"\d{2,4}(?:[ .-]\d{2,5}){1,4}(?![\w.-]?\d)"
    r"|(?<![\w+])\+\d{8,15}(?!\d)"
)
_SSN_SHAPE = re.compile(r"^\d{3}-\d{2}-\d{4}$")  # SSN-shaped but invalid: not a phone either
_DOTTED_QUAD = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_DATE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum payment card numbers carry (a random 16-digit number fails 9 in 10)."""
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = ord(character) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _mask(value: str, keep: int = 4) -> str:
    visible = value[-keep:]
    return "*" * max(0, len(value) - keep) + visible


@dataclass(frozen=True)
class PiiMatch:
    kind: str
    start: int
    end: int
    description: str


def find_pii(text: str) -> list[PiiMatch]:
    """Personal data in one text. Card numbers must pass Luhn and IBANs their mod-97 check, so
    order numbers and other long digit runs are not reported as cards."""
    found: list[PiiMatch] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    def add(kind: str, match: re.Match[str], description: str) -> None:
        found.append(PiiMatch(kind, match.start(), match.end(), description))
        taken.append((match.start(), match.end()))

    if "@" in text:
        for match in _EMAIL.finditer(text):
            user, _, domain = match.group().partition("@")
            add(PII_EMAIL, match, f"an e-mail address {user[:1]}***@{domain}")
    for match in _IBAN.finditer(text):
        if free(match.start(), match.end()) and iban_valid(match.group()):
            add(PII_ID, match, f"an IBAN {_mask(match.group().replace(' ', ''))}")
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if free(match.start(), match.end()) and 13 <= len(digits) <= 19 and luhn_valid(digits):
            add(PII_CARD, match, f"a payment card number {_mask(digits)}")
    for match in _SSN.finditer(text):
        if free(match.start(), match.end()):
            add(PII_ID, match, f"an SSN-like number {_mask(match.group())}")
    for match in _PHONE.finditer(text):
        value = match.group()
        digit_count = sum(ch.isdigit() for ch in value)
        least = 8 if value.startswith("+") else 9
        if not free(match.start(), match.end()) or not least <= digit_count <= 15:
            continue
        if _DOTTED_QUAD.match(value) or _DATE.match(value) or _SSN_SHAPE.match(value):
            continue
        add(PII_PHONE, match, f"a phone number {_mask(re.sub(r'[^0-9+]', '', value))}")
    return found


def personal_data(conversations: Sequence[object]) -> list[Issue]:
    """One finding per example and kind, naming where the first occurrence is."""
    issues: list[Issue] = []
    for index, messages in enumerate(conversations):
        if not isinstance(messages, list):
            continue
        first: dict[str, tuple[str, int]] = {}
        counts: dict[str, int] = defaultdict(int)
        for position, message in enumerate(messages):
            content = _content(message)
            # Cheap guard: every kind of personal data has a digit or an "@".
            if not content or not (("@" in content) or any(ch.isdigit() for ch in content)):
                continue
            for match in find_pii(content):
                counts[match.kind] += 1
                first.setdefault(match.kind, (match.description, position))
        for kind, (description, position) in first.items():
            more = f" (and {counts[kind] - 1} more)" if counts[kind] > 1 else ""
            issues.append(
                Issue(
                    index,
                    kind,
                    WARNING,
                    f"messages[{position}].content: contains {description}{more}; remove "
                    "or mask personal data before training",
                )
            )
    return issues


# -- leftover markup -------------------------------------------------------------------------

_HTML_TAG = re.compile(
    r"</?(?:html|head|body|div|span|p|br|hr|a|b|i|u|em|strong|ul|ol|li|table|thead|tbody|tr|td"
    r"|th|h[1-6]|img|script|style|font|blockquote)(?:\s[^<>]*)?/?>",
    re.IGNORECASE,
)
_HTML_ENTITY = re.compile(r"&(?:nbsp|amp|lt|gt|quot|apos|#\d{2,5});")
_PLACEHOLDER = re.compile(
    r"\{\{\s*[\w.\- ]+\s*\}\}|\{%.*?%\}|\$\{\w+\}|\[\[?\s*(?:INSERT|PLACEHOLDER|TODO|TBD)\b[^\]]*\]"
    r"|<(?:INSERT|PLACEHOLDER)[^>]*>|\{(?:customer|first|last|user|agent|company)_?\w*\}",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_AI_DISCLAIMER = re.compile(r"\bas an ai (?:language )?model\b", re.IGNORECASE)


def markup_problems(text: str, *, is_answer: bool) -> list[str]:
    problems: list[str] = []
    if "<" in text:
        tag = _HTML_TAG.search(text)
        if tag:
            problems.append(f"an HTML tag {tag.group()[:30]!r}")
    if "&" in text:
        entity = _HTML_ENTITY.search(text)
        if entity:
            problems.append(f"an HTML entity {entity.group()!r}")
    if "{" in text or "[" in text or "<" in text or "$" in text:
        placeholder = _PLACEHOLDER.search(text)
        if placeholder:
            problems.append(f"an unfilled template placeholder {placeholder.group()[:30]!r}")
    if "```" in text or "~~~" in text:
        fences = _FENCE.findall(text)
        if len(fences) % 2 == 1:
            problems.append("a markdown code fence that is never closed")
    if is_answer and _AI_DISCLAIMER.search(text):
        problems.append('the phrase "as an AI language model"')
    return problems


def leftover_markup(conversations: Sequence[object]) -> list[Issue]:
    issues: list[Issue] = []
    for index, messages in enumerate(conversations):
        if not isinstance(messages, list):
            continue
        found: list[str] = []
        for position, message in enumerate(messages):
            content = _content(message)
            problems = markup_problems(content, is_answer=_role(message) == "assistant")
            found.extend(f"messages[{position}].content: {p}" for p in problems)
        if found:
            extra = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            issues.append(Issue(index, MARKUP, WARNING, f"Leftover markup: {found[0]}{extra}"))
    return issues


# -- answer contract -------------------------------------------------------------------------


def contract_violations(
    parts: Parts, has_answer: np.ndarray, contract: dict[str, object]
) -> list[Issue]:
    """An error for each answer that breaks the dataset's answer contract: the model would be
    taught to break it, and evaluation would score against a reference no consumer accepts.
    Conversations without a final answer are left to validation's own error."""
    if not contract:
        return []
    issues: list[Issue] = []
    check = ContractCheck(contract)
    for index in np.flatnonzero(has_answer).tolist():
        message = check.violation(parts.answers[index])
        if message is not None:
            issues.append(Issue(index, CONTRACT_VIOLATION, ERROR, message))
    return issues
