"""The validation task metric of a label-set task, measured by the trainer at each validation
pass: the share of validation conversations whose reference label the model answers when its
greedy reply is constrained to the label set, as an evaluation's default candidate answers.

A validation loss says how surprised the model is by the reference tokens; a search over
training settings and early stopping want what the lead will be shown instead, the share of
right labels. Constrained decoding gives it for about the price of one forward pass over the
prompts (a label is a few tokens, and the prompts' shared system prompt runs once), where
ranking every label by its likelihood costs several times more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from providers.base import AnswerConstraint, Conversation, ProviderError
from providers.constrained import TokenGuide

from .encoding import render_chat, token_ids
from .generation import greedy_decode, stop_token_ids

# Answers decoded together; the evaluation runner's default batch.
DECODE_BATCH_SIZE = 16


@dataclass(frozen=True)
class LabelQuestions:
    """The validation conversations as prompts, with the label each should be answered."""

    prompts: list[list[int]]
    answers: list[str]


def label_questions(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation]
) -> LabelQuestions:
    """Each conversation that ends with an assistant reply, split into the prompt before the
    reply and the reply; the others have nothing to check and are left out."""
    prompts: list[list[int]] = []
    answers: list[str] = []
    for conversation in conversations:
        if not conversation or conversation[-1].get("role") != "assistant":
            continue
        text = render_chat(tokenizer, list(conversation[:-1]), add_generation_prompt=True)
        prompts.append(token_ids(tokenizer, text))
        answers.append(conversation[-1].get("content", "").strip())
    return LabelQuestions(prompts, answers)


class LabelAccuracy:
    """Measures a model's label accuracy on a fixed set of questions, its guide built once."""

    def __init__(
        self,
        model: PreTrainedModel | PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        labels: Sequence[str],
        questions: LabelQuestions,
        device: str,
    ) -> None:
        if not labels:
            raise ProviderError("label accuracy needs the label set; it is empty")
        if not questions.prompts:
            raise ProviderError(
                "label accuracy needs validation conversations that end with an assistant "
                "reply; the validation set has none"
            )
        self.tokenizer = tokenizer
        self.questions = questions
        self.device = device
        # A LoRA-wrapped model stops and counts its vocabulary as the model it wraps.
        base = cast(
            PreTrainedModel, model.get_base_model() if isinstance(model, PeftModel) else model
        )
        self.stop_ids = stop_token_ids(base, tokenizer, device)
        self.guide = TokenGuide(
            AnswerConstraint(kind="label_set", labels=tuple(labels)),
            tokenizer,
            vocab_size=int(base.config.vocab_size),
            stop_ids=self.stop_ids.tolist(),
        )
        # The longest label's tokens and its stop token bound every answer.
        self.max_new_tokens = 1 + max(len(token_ids(tokenizer, label)) for label in labels)

    def measure(self, model: torch.nn.Module) -> float:
        """The share of questions answered with their reference label, in [0, 1]."""
        prompts, answers = self.questions.prompts, self.questions.answers
        # Prompts of similar length together pad least.
        order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
        right = 0
        model.eval()
        for start in range(0, len(order), DECODE_BATCH_SIZE):
            indices = order[start : start + DECODE_BATCH_SIZE]
            completions = greedy_decode(
                model,  # type: ignore[arg-type]  # a PeftModel forwards like its base model
                [prompts[index] for index in indices],
                self.max_new_tokens,
                self.stop_ids,
                self.device,
                guide=self.guide,
            )
            for index, completion in zip(indices, completions, strict=True):
                reply = self.tokenizer.decode(completion, skip_special_tokens=True)
                right += str(reply).strip() == answers[index]
        return right / len(prompts)
