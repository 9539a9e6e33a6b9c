"""How a candidate sees an evaluation item: zero-shot as stored, few-shot with k examples drawn
from the training split, or through a candidate's own prompt template.

Few-shot examples are given as earlier conversation turns (user, then the ideal assistant
answer) after the item's system message: chat models read that as worked examples, and the
shots cost their tokens on every request, which is what the fine-tune-or-prompt comparison has
to count.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

Message = dict[str, str]
Conversation = list[Message]

INPUT_PLACEHOLDER = "{input}"


@dataclass(frozen=True)
class PromptTemplate:
    """A candidate's own prompt: an optional system prompt that replaces the item's, and a user
    message in which ``{input}`` stands for the item's last user message. Only that placeholder
    is replaced (no str.format), so braces in templates and inputs are left alone."""

    system: str | None = None
    user: str = INPUT_PLACEHOLDER

    def __post_init__(self) -> None:
        if INPUT_PLACEHOLDER not in self.user:
            raise ValueError(f"the user template must contain {INPUT_PLACEHOLDER}")


def prompt_of(conversation: Sequence[Message]) -> Conversation:
    """The conversation up to (not including) its final assistant answer."""
    messages = list(conversation)
    if messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("an evaluation item must end with a user message before its answer")
    return [dict(message) for message in messages]


def answer_of(conversation: Sequence[Message]) -> str:
    if not conversation or conversation[-1].get("role") != "assistant":
        raise ValueError("an evaluation item must end with the ideal assistant answer")
    return conversation[-1].get("content", "")


def pick_shots(
    pool: Sequence[Conversation], *, k: int, seed: int, exclude: Sequence[Conversation] = ()
) -> list[Conversation]:
    """``k`` examples drawn without replacement from the training split, reproducible by seed.

    Examples identical to an evaluation item are left out, so a shot never gives the answer
    away (a duplicated example in both splits would otherwise inflate few-shot scores).
    """
    if k < 0:
        raise ValueError("k must be 0 or more")
    excluded = {_key(conversation) for conversation in exclude}
    candidates = [c for c in pool if _key(c) not in excluded]
    if k > len(candidates):
        raise ValueError(
            f"{k} shots asked for, but the training split has only {len(candidates)} usable "
            "examples"
        )
    return random.Random(seed).sample(candidates, k)


def _key(conversation: Sequence[Message]) -> tuple[tuple[str, str], ...]:
    return tuple((m.get("role", ""), m.get("content", "")) for m in conversation)


def shot_turns(shot: Sequence[Message]) -> Conversation:
    """A few-shot example as it is sent: its last user message and its ideal answer (its own
    system message and earlier turns are left out)."""
    return [
        {"role": "user", "content": prompt_of(shot)[-1]["content"]},
        {"role": "assistant", "content": answer_of(shot)},
    ]


def few_shot_prompt(item: Sequence[Message], shots: Sequence[Conversation]) -> Conversation:
    """The item's system message(s), then each shot as a user turn and its ideal answer, then
    the item's own turns."""
    prompt = prompt_of(item)
    system = [m for m in prompt if m.get("role") == "system"]
    turns = [m for m in prompt if m.get("role") != "system"]
    worked = [turn for shot in shots for turn in shot_turns(shot)]
    return [*system, *worked, *turns]


def templated_prompt(item: Sequence[Message], template: PromptTemplate) -> Conversation:
    """The item's prompt with the template's system prompt and user wording applied to its last
    user message; earlier turns are kept as they are."""
    prompt = prompt_of(item)
    last = prompt[-1]
    turns = [m for m in prompt[:-1] if m.get("role") != "system" or template.system is None]
    user = {"role": "user", "content": template.user.replace(INPUT_PLACEHOLDER, last["content"])}
    system = [{"role": "system", "content": template.system}] if template.system is not None else []
    return [*system, *turns, user]
