"""What the analyzers report: one finding per example and problem, with stable kind names.

The kind names are an interface: the review queue filters on ``?finding=<kind>`` and the
API returns them, so they never change once published.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"

# Validation kinds (one per rule).
MISSING_MESSAGES = "missing_messages"
UNKNOWN_ROLE = "unknown_role"
UNKNOWN_KEY = "unknown_key"
NO_ASSISTANT_ANSWER = "no_assistant_answer"
ROLE_ORDER = "role_order"
EMPTY_CONTENT = "empty_content"
OVER_CONTEXT = "over_context"

# Quality analyzer kinds.
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
CONFLICTING_ANSWER = "conflicting_answer"
LENGTH_OUTLIER = "length_outlier"
SHORT_ANSWER = "short_answer"
PII_EMAIL = "pii_email"
PII_PHONE = "pii_phone"
PII_CARD = "pii_card"
PII_ID = "pii_id"
MARKUP = "markup"
# The answer breaks the dataset's answer contract (label set, JSON Schema or pattern).
CONTRACT_VIOLATION = "contract_violation"

VALIDATION_KINDS = (
    MISSING_MESSAGES,
    UNKNOWN_ROLE,
    UNKNOWN_KEY,
    NO_ASSISTANT_ANSWER,
    ROLE_ORDER,
    EMPTY_CONTENT,
    OVER_CONTEXT,
)
ANALYZER_KINDS = (
    EXACT_DUPLICATE,
    NEAR_DUPLICATE,
    CONFLICTING_ANSWER,
    LENGTH_OUTLIER,
    SHORT_ANSWER,
    PII_EMAIL,
    PII_PHONE,
    PII_CARD,
    PII_ID,
    MARKUP,
    CONTRACT_VIOLATION,
)
ALL_KINDS = VALIDATION_KINDS + ANALYZER_KINDS

KIND_LABELS: dict[str, str] = {
    MISSING_MESSAGES: "Missing or empty messages",
    UNKNOWN_ROLE: "Unknown role",
    UNKNOWN_KEY: "Unknown key",
    NO_ASSISTANT_ANSWER: "No assistant answer",
    ROLE_ORDER: "Roles out of order",
    EMPTY_CONTENT: "Empty content",
    OVER_CONTEXT: "Over the context length",
    EXACT_DUPLICATE: "Exact duplicates",
    NEAR_DUPLICATE: "Near-duplicates",
    CONFLICTING_ANSWER: "Conflicting answers",
    LENGTH_OUTLIER: "Answer length outliers",
    SHORT_ANSWER: "Very short answers",
    PII_EMAIL: "E-mail addresses",
    PII_PHONE: "Phone numbers",
    PII_CARD: "Payment card numbers",
    PII_ID: "ID numbers (IBAN, SSN)",
    MARKUP: "Leftover markup",
    CONTRACT_VIOLATION: "Breaks the answer contract",
}


@dataclass(frozen=True)
class Issue:
    """One problem in one example; ``index`` is the example's position in the analysed list."""

    index: int
    kind: str
    severity: str
    message: str
    # Examples found together (one duplicate group, one conflict) share a group key.
    group_key: str = ""
