"""Local provider: LoRA fine-tuning and generation with transformers + peft, on CPU or one GPU.

Training runs synchronously in the calling process (a Celery worker); generation keeps the last
few loaded models in memory, since an evaluation generates with the same model more than once.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from providers.base import (
    CheckpointSaved,
    Conversation,
    Generation,
    ProviderError,
    TrainingCancelled,
    TrainingConfig,
    TrainingProgress,
    TrainingResult,
)

IGNORED_LABEL = -100  # cross_entropy's ignore_index: these positions add nothing to the loss
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
MAX_GRAD_NORM = 1.0
MODEL_CACHE_SIZE = 2


def pick_device(requested: str | None) -> str:
    if requested is not None:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype_for(device: str) -> torch.dtype:
    # bf16 halves memory and is fast on GPUs; CPUs are slow or inexact in bf16, so stay in fp32.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _load_base_model(base_model_dir: Path, device: str) -> PreTrainedModel:
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
        base_model_dir, dtype=_dtype_for(device), local_files_only=True
    )
    return model.to(device)  # type: ignore[arg-type]


def _load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
        model_dir, local_files_only=True
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: Conversation, *, add_generation_prompt: bool
) -> str:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if not isinstance(text, str):
        raise ProviderError("the tokenizer's chat template did not render to text")
    return text


def _token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


# --- training data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def supervised_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORED_LABEL)


def encode_for_training(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, max_seq_len: int
) -> EncodedExample:
    """Tokenize a conversation so that only assistant replies carry labels.

    The text is tokenized piece by piece (prompt, reply, prompt, reply...) rather than whole:
    at generation time the prompt is tokenized on its own and the reply is appended token by
    token, so training on the same split keeps the two consistent at the boundary.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for index, message in enumerate(conversation):
        if message.get("role") != "assistant":
            continue
        if index == 0:
            raise ProviderError("a training conversation starts with an assistant message")
        prompt = _render(tokenizer, conversation[:index], add_generation_prompt=True)
        with_reply = _render(tokenizer, conversation[: index + 1], add_generation_prompt=False)
        if not prompt.startswith(rendered) or not with_reply.startswith(prompt):
            raise ProviderError("the chat template does not render conversations prefix-stably")
        prompt_ids = _token_ids(tokenizer, prompt[len(rendered) :])
        reply_ids = _token_ids(tokenizer, with_reply[len(prompt) :])
        # OpenAI's format lets a reply carry weight 0: it stays as context but is not learned.
        learned = str(message.get("weight", 1)) != "0"
        input_ids += prompt_ids + reply_ids
        labels += [IGNORED_LABEL] * len(prompt_ids)
        labels += reply_ids if learned else [IGNORED_LABEL] * len(reply_ids)
        rendered = with_reply
    return EncodedExample(input_ids[:max_seq_len], labels[:max_seq_len])


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


def collate(examples: Sequence[EncodedExample], pad_token_id: int, device: str) -> Batch:
    # Right padding is fine for training; labels mask the padding, not the pad id, because this
    # tokenizer pads with its end-of-turn token, which replies must still learn to produce.
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORED_LABEL, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        attention_mask[row, :length] = 1
        labels[row, :length] = torch.tensor(example.labels)
    return Batch(input_ids.to(device), attention_mask.to(device), labels.to(device))


def summed_token_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Sum of next-token losses over labelled positions, and how many there were."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    predicted = logits[:, :-1, :].float()
    targets = batch.labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORED_LABEL,
        reduction="sum",
    )
    return loss, int((targets != IGNORED_LABEL).sum().item())


def _chunks(items: Sequence[EncodedExample], size: int) -> Iterator[Sequence[EncodedExample]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- training -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    steps_per_epoch: int
    total_steps: int


def _plan(example_count: int, config: TrainingConfig) -> _Plan:
    steps_per_epoch = math.ceil(example_count / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    return _Plan(steps_per_epoch, total_steps)


class LocalLoRAFineTuner:
    """Trains a LoRA adapter on the attention projections of a local base model."""

    def __init__(self, base_model_dir: Path, device: str | None = None) -> None:
        self.base_model_dir = base_model_dir
        self.device = pick_device(device)

    def train(
        self,
        *,
        train: Sequence[Conversation],
        validation: Sequence[Conversation],
        config: TrainingConfig,
        output_dir: Path,
        on_progress: Callable[[TrainingProgress], None],
        should_stop: Callable[[], bool],
        on_checkpoint: Callable[[CheckpointSaved], None] | None = None,
        resume_from: Path | None = None,
    ) -> TrainingResult:
        if resume_from is not None:
            raise ProviderError("resuming from a checkpoint is not supported yet")
        started = time.monotonic()
        _check_config(config)
        tokenizer = _load_tokenizer(self.base_model_dir)
        train_examples = self._encode_train_set(tokenizer, train, config)
        validation_examples = [
            encode_for_training(tokenizer, conversation, config.max_seq_len)
            for conversation in validation
        ]
        plan = _plan(len(train_examples), config)

        torch.manual_seed(config.seed)  # LoRA's A matrices are initialised randomly
        model = self._build_peft_model(config)
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
        pad_token_id = int(tokenizer.pad_token_id)

        step = 0
        train_loss: float | None = None
        val_loss: float | None = None
        trained_tokens = 0
        for batch_examples in _shuffled_batches(train_examples, config, plan.total_steps):
            if should_stop():
                raise TrainingCancelled(f"training stopped by request before step {step + 1}")
            batch = collate(batch_examples, pad_token_id, self.device)
            train_loss, token_count = _optimizer_step(model, optimizer, trainable, batch)
            step += 1
            trained_tokens += token_count

            step_val_loss: float | None = None
            if step % config.eval_every_steps == 0 or step == plan.total_steps:
                step_val_loss = self._validation_loss(model, validation_examples, config, tokenizer)
                val_loss = step_val_loss if step_val_loss is not None else val_loss
            on_progress(
                TrainingProgress(
                    step=step,
                    total_steps=plan.total_steps,
                    epoch=step / plan.steps_per_epoch,
                    train_loss=train_loss,
                    val_loss=step_val_loss,
                )
            )

        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(output_dir))
        tokenizer.save_pretrained(output_dir)
        return TrainingResult(
            adapter_dir=output_dir,
            steps=step,
            train_loss=train_loss,
            val_loss=val_loss,
            device=self.device,
            seconds=time.monotonic() - started,
            metrics={
                "train_examples": float(len(train_examples)),
                "skipped_train_examples": float(len(train) - len(train_examples)),
                "validation_examples": float(len(validation_examples)),
                "trained_tokens": float(trained_tokens),
            },
        )

    def _encode_train_set(
        self,
        tokenizer: PreTrainedTokenizerBase,
        train: Sequence[Conversation],
        config: TrainingConfig,
    ) -> list[EncodedExample]:
        if not train:
            raise ProviderError("the training set is empty; add at least one conversation")
        encoded = [
            encode_for_training(tokenizer, conversation, config.max_seq_len)
            for conversation in train
        ]
        # A conversation with no assistant reply (or one cut off by max_seq_len) teaches nothing
        # and would divide by zero tokens.
        usable = [example for example in encoded if example.supervised_tokens > 0]
        if not usable:
            raise ProviderError(
                "no training conversation has an assistant reply within "
                f"max_seq_len={config.max_seq_len} tokens"
            )
        return usable

    def _build_peft_model(self, config: TrainingConfig) -> PeftModel:
        base = _load_base_model(self.base_model_dir, self.device)
        base.config.use_cache = False  # the KV cache only helps generation
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=LORA_TARGET_MODULES,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, lora)
        if not isinstance(model, PeftModel):
            raise ProviderError("peft returned a mixed-adapter model, which training does not use")
        return model

    def _validation_loss(
        self,
        model: torch.nn.Module,
        examples: Sequence[EncodedExample],
        config: TrainingConfig,
        tokenizer: PreTrainedTokenizerBase,
    ) -> float | None:
        """Mean loss per reply token over the whole validation set; None when there is none."""
        model.eval()
        total_loss = 0.0
        total_tokens = 0
        with torch.no_grad():
            for chunk in _chunks(examples, config.batch_size):
                batch = collate(chunk, int(tokenizer.pad_token_id), self.device)
                loss_sum, token_count = summed_token_loss(model, batch)
                total_loss += loss_sum.item()
                total_tokens += token_count
        return total_loss / total_tokens if total_tokens else None


def _optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainable: list[torch.nn.Parameter],
    batch: Batch,
) -> tuple[float, int]:
    """One update on a batch; returns its mean loss per reply token and the token count."""
    model.train()
    loss_sum, token_count = summed_token_loss(model, batch)
    loss = loss_sum / token_count
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
    optimizer.step()
    return loss.item(), token_count


def _check_config(config: TrainingConfig) -> None:
    for name in ("epochs", "batch_size", "eval_every_steps", "max_seq_len"):
        if getattr(config, name) < 1:
            raise ProviderError(f"{name} must be at least 1")
    if config.max_steps is not None and config.max_steps < 1:
        raise ProviderError("max_steps must be at least 1 when set")


def _shuffled_batches(
    examples: Sequence[EncodedExample], config: TrainingConfig, total_steps: int
) -> Iterator[Sequence[EncodedExample]]:
    """Batches in a seeded order, reshuffled each epoch, stopping after total_steps."""
    generator = torch.Generator().manual_seed(config.seed)
    produced = 0
    for _epoch in range(config.epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        shuffled = [examples[index] for index in order]
        for batch in _chunks(shuffled, config.batch_size):
            if produced == total_steps:
                return
            produced += 1
            yield batch


# --- generation ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=MODEL_CACHE_SIZE)
def _load_for_generation(
    base_model_dir: Path, adapter_dir: Path | None, device: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = _load_base_model(base_model_dir, device)
    tokenizer = _load_tokenizer(base_model_dir)
    if adapter_dir is not None:
        adapted = PeftModel.from_pretrained(model, adapter_dir)
        # Folding the adapter into the weights makes generation as fast as the base model.
        model = adapted.merge_and_unload()
    model.eval()
    # Decoder-only models continue from the last position, so prompts must end flush right.
    tokenizer.padding_side = "left"
    return model, tokenizer


class LocalChatModel:
    """Greedy generation with the base model, or with a LoRA adapter applied on top."""

    def __init__(
        self, base_model_dir: Path, adapter_dir: Path | None = None, device: str | None = None
    ) -> None:
        self.base_model_dir = base_model_dir.resolve()
        self.adapter_dir = adapter_dir.resolve() if adapter_dir is not None else None
        self.device = pick_device(device)

    def generate_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 128,
        batch_size: int = 16,
    ) -> list[Generation]:
        if batch_size < 1:
            raise ProviderError("batch_size must be at least 1")
        model, tokenizer = _load_for_generation(self.base_model_dir, self.adapter_dir, self.device)
        prompts = [_render(tokenizer, list(c), add_generation_prompt=True) for c in conversations]
        # Batching prompts of similar length wastes less compute on padding.
        order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
        results: dict[int, Generation] = {}
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            generations = _generate(
                model, tokenizer, [prompts[i] for i in indices], max_new_tokens, self.device
            )
            results.update(zip(indices, generations, strict=True))
        return [results[index] for index in range(len(prompts))]


def _generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    device: str,
) -> list[Generation]:
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    input_ids = encoded["input_ids"].to(device)
    attention_mask = encoded["attention_mask"].to(device)
    with torch.inference_mode():
        output = model.generate(  # type: ignore[operator]
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = output[:, input_ids.shape[1] :].tolist()
    prompt_lengths = attention_mask.sum(dim=1).tolist()
    return [
        _to_generation(tokenizer, tokens, int(prompt_length))
        for tokens, prompt_length in zip(new_tokens, prompt_lengths, strict=True)
    ]


def _to_generation(
    tokenizer: PreTrainedTokenizerBase, new_tokens: list[int], prompt_tokens: int
) -> Generation:
    # Rows that finish early are padded after their end-of-turn token; count up to and
    # including that token, which the model did generate.
    completion = new_tokens
    if tokenizer.eos_token_id in new_tokens:
        completion = new_tokens[: new_tokens.index(tokenizer.eos_token_id) + 1]
    text = tokenizer.decode(completion, skip_special_tokens=True)
    if not isinstance(text, str):
        raise ProviderError("the tokenizer decoded one sequence into several texts")
    return Generation(
        text=text.strip(), prompt_tokens=prompt_tokens, completion_tokens=len(completion)
    )
