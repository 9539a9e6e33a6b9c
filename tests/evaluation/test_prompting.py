"""Zero-shot, few-shot and templated prompts for evaluation candidates."""

from __future__ import annotations

import pytest

from evaluation.prompting import (
    PromptTemplate,
    answer_of,
    few_shot_prompt,
    pick_shots,
    prompt_of,
    templated_prompt,
)

SYSTEM = {"role": "system", "content": "Triage the ticket."}


def example(ticket: str, label: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": ticket}, {"role": "assistant", "content": label}]


POOL = [example(f"ticket {n}", f"label {n % 3}") for n in range(10)]
ITEM = example("My invoice is wrong {0}", "billing")


def test_the_prompt_is_the_item_without_its_answer():
    assert prompt_of(ITEM) == ITEM[:2]
    assert answer_of(ITEM) == "billing"
    with pytest.raises(ValueError, match="end with a user message"):
        prompt_of([SYSTEM])


def test_shots_are_reproducible_by_seed_and_differ_across_seeds():
    first = pick_shots(POOL, k=3, seed=7)
    assert first == pick_shots(POOL, k=3, seed=7)
    assert len({tuple(map(str, shot)) for shot in first}) == 3  # without replacement
    assert any(pick_shots(POOL, k=3, seed=s) != first for s in range(8, 12))


def test_an_example_identical_to_an_item_is_never_a_shot():
    pool = [*POOL[:2], ITEM]
    for seed in range(20):
        assert ITEM not in pick_shots(pool, k=2, seed=seed, exclude=[ITEM])
    with pytest.raises(ValueError, match="only 2 usable examples"):
        pick_shots(pool, k=3, seed=0, exclude=[ITEM])


def test_few_shot_puts_worked_examples_between_the_system_prompt_and_the_item():
    shots = POOL[:2]
    prompt = few_shot_prompt(ITEM, shots)
    assert [m["role"] for m in prompt] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert prompt[0] == SYSTEM
    assert prompt[1:5] == [
        {"role": "user", "content": "ticket 0"},
        {"role": "assistant", "content": "label 0"},
        {"role": "user", "content": "ticket 1"},
        {"role": "assistant", "content": "label 1"},
    ]
    assert prompt[-1] == ITEM[1]
    assert few_shot_prompt(ITEM, []) == prompt_of(ITEM)  # k=0 is zero-shot


def test_a_template_rewords_the_last_user_message_and_leaves_braces_alone():
    template = PromptTemplate(
        system="You label tickets {strictly}.", user="Ticket: {input}\nLabel:"
    )
    prompt = templated_prompt(ITEM, template)
    assert prompt == [
        {"role": "system", "content": "You label tickets {strictly}."},
        {"role": "user", "content": "Ticket: My invoice is wrong {0}\nLabel:"},
    ]
    # Without a system prompt of its own, the item's is kept.
    assert templated_prompt(ITEM, PromptTemplate(user="Q: {input}"))[0] == SYSTEM
    with pytest.raises(ValueError, match="must contain"):
        PromptTemplate(user="no placeholder")
