"""Local provider: LoRA fine-tuning and generation with transformers + peft, on CPU or one GPU.

Training runs synchronously in the calling process (a Celery worker); generation keeps the last
few loaded models in memory, since an evaluation generates with the same model more than once.

What makes training fast spends no compute on tokens that teach nothing:
- batches group examples of similar length (epoch_batch_order), and each batch is packed
  several examples to a row (collate_packed), so almost no padding goes through the model;
- the output head (a 49k-word vocabulary for SmolLM2, about a fifth of the model's FLOPs per
  token) and the cross-entropy run only at positions whose next token is labelled.
Each gives the plain computation's loss and gradients (tests/providers/test_local_speed.py),
and each is checked on the loaded model before training relies on it (packing_is_exact,
token_loss_for), falling back to the plain way for architectures where it would not hold.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.cache_utils import Cache, DynamicLayer

from providers.base import (
    AnswerConstraint,
    ChatResult,
    CheckpointSaved,
    Conversation,
    Generation,
    OnResult,
    ProviderError,
    TrainingCancelled,
    TrainingConfig,
    TrainingProgress,
    TrainingResult,
    step_plan,
)
from providers.constrained import TokenGuide
from providers.cpu_matmul import onednn_linear

IGNORED_LABEL = -100  # cross_entropy's ignore_index: these positions add nothing to the loss
MAX_GRAD_NORM = 1.0
# torch.optim.AdamW's own default, named so that the benchmark's baseline can use the same.
WEIGHT_DECAY = 0.01
MODEL_CACHE_SIZE = 2
# Examples are sorted by length within groups of this many batches. Larger groups mean less
# padding but batches that differ less from epoch to epoch.
BATCHES_PER_LENGTH_GROUP = 16
CHECKPOINTS_DIR = "checkpoints"


def pick_device(requested: str | None) -> str:
    if requested is not None:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def training_dtype(device: str) -> torch.dtype:
    # bf16 halves memory and is fast on GPUs; CPUs are slow or inexact in bf16, so stay in fp32.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _load_base_model(base_model_dir: Path, device: str) -> PreTrainedModel:
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
        base_model_dir, dtype=training_dtype(device), local_files_only=True
    )
    return model.to(device)  # type: ignore[arg-type]


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
        model_dir, local_files_only=True
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: Conversation, *, add_generation_prompt: bool
) -> str:
    if not tokenizer.chat_template:
        raise ProviderError(
            f"the tokenizer of {tokenizer.name_or_path} has no chat template to render "
            "conversations with"
        )
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


def training_set_fingerprint(examples: Sequence[EncodedExample]) -> str:
    """Identifies the encoded training set, so a checkpoint is never resumed on other data."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.input_ids, example.labels]).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    # Padded batches mark their padding here; packed ones have none and restart position_ids
    # at 0 for each example instead.
    attention_mask: torch.Tensor | None
    labels: torch.Tensor
    position_ids: torch.Tensor | None = None

    def model_inputs(self) -> dict[str, Any]:
        # A KV cache would make transformers skip the packed-sequence check (it assumes
        # generation) and let packed examples attend to each other; training never needs one.
        inputs: dict[str, Any] = {"input_ids": self.input_ids, "use_cache": False}
        if self.attention_mask is not None:
            inputs["attention_mask"] = self.attention_mask
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids
        return inputs


Collate = Callable[[Sequence[EncodedExample], int, str], Batch]


def collate(examples: Sequence[EncodedExample], pad_token_id: int, device: str) -> Batch:
    """One example per row, right-padded to the longest."""
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


def pack_rows(lengths: Sequence[int]) -> list[list[int]]:
    """Indices of the examples to put in each row, first-fit by decreasing length, into rows as
    long as the longest example: never wider than padding would be, and mostly full."""
    capacity = max(lengths)
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        fitting = next((row for row, free in enumerate(room) if lengths[index] <= free), None)
        if fitting is None:
            rows.append([index])
            room.append(capacity - lengths[index])
        else:
            rows[fitting].append(index)
            room[fitting] -= lengths[index]
    return rows


def collate_packed(examples: Sequence[EncodedExample], pad_token_id: int, device: str) -> Batch:
    """Several examples per row (see pack_rows), each attending only to itself.

    Without an attention mask, transformers reads position_ids that restart at 0 as the start
    of a new sequence and gives the row a block-diagonal causal mask; the padding at a row's end
    restarts too, so it forms a segment of its own that no example sees. packing_is_exact
    checks that a model honours this before training relies on it.
    """
    rows = pack_rows([len(example.input_ids) for example in examples])
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORED_LABEL, dtype=torch.long)
    for row, members in enumerate(rows):
        start = 0
        for member in members:
            example = examples[member]
            end = start + len(example.input_ids)
            input_ids[row, start:end] = torch.tensor(example.input_ids)
            position_ids[row, start:end] = torch.arange(end - start)
            labels[row, start:end] = torch.tensor(example.labels)
            # The previous example's last position must not learn to predict this first token
            # (unpacked, nothing predicts a first token).
            labels[row, start] = IGNORED_LABEL
            start = end
        position_ids[row, start:] = torch.arange(width - start)
    return Batch(
        input_ids.to(device), None, labels.to(device), position_ids=position_ids.to(device)
    )


def input_tokens(examples: Sequence[EncodedExample]) -> int:
    """Non-padding input tokens: what throughput counts, here and in the benchmark's baseline."""
    return sum(len(example.input_ids) for example in examples)


# --- the loss -----------------------------------------------------------------------------------

# Sum of next-token losses over a batch's labelled positions, and how many there were.
TokenLoss = Callable[[Batch], tuple[torch.Tensor, int]]


def summed_token_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """The plain computation: logits at every position, loss where a label follows."""
    logits = model(**batch.model_inputs()).logits
    predicted = logits[:, :-1, :].float()
    targets = batch.labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORED_LABEL,
        reduction="sum",
    )
    return loss, int((targets != IGNORED_LABEL).sum().item())


def predicting_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (row * width + column) of the positions whose next token is labelled, and
    those next tokens: the only places where logits are needed."""
    following = labels[:, 1:]
    rows, columns = (following != IGNORED_LABEL).nonzero(as_tuple=True)
    return rows * labels.size(1) + columns, following[rows, columns]


class LabelledPositionLoss:
    """The same sum as summed_token_loss, with the output head run only where it counts.

    The decoder still sees every token (prompts are context), but the head's matmul into the
    vocabulary, the fp32 logits and the softmax are computed for labelled positions only; for
    short answers to long prompts that is a few percent of the positions.
    """

    def __init__(self, decoder: torch.nn.Module, head: torch.nn.Module) -> None:
        self.decoder = decoder
        self.head = head

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, int]:
        hidden = self.decoder(**batch.model_inputs()).last_hidden_state
        positions, targets = predicting_positions(batch.labels)
        selected = hidden.reshape(-1, hidden.size(-1)).index_select(0, positions)
        logits = self.head(selected).float()
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        return loss, int(targets.numel())


def token_loss_for(model: PeftModel, device: str) -> TokenLoss:
    """The fastest loss that gives this model's own logits.

    Some architectures transform the head's output (Gemma's soft-capping, Cohere's logit
    scale); calling the head directly would silently train on other logits, so the shortcut is
    used only after checking that it reproduces the full model's logits.
    """
    plain: TokenLoss = functools.partial(summed_token_loss, model)
    causal_lm = model.get_base_model()
    if not isinstance(causal_lm, PreTrainedModel):
        return plain
    decoder = causal_lm.get_decoder()
    head = causal_lm.get_output_embeddings()
    if decoder is causal_lm or not isinstance(head, torch.nn.Module):
        return plain
    probe = torch.arange(1, 9, device=device).unsqueeze(0)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        full = model(input_ids=probe, use_cache=False).logits[0].float()
        shortcut = head(decoder(input_ids=probe, use_cache=False).last_hidden_state[0]).float()
    model.train(was_training)
    if not logits_match(shortcut, full, device):
        return plain
    return LabelledPositionLoss(decoder, head)


def logits_match(actual: torch.Tensor, expected: torch.Tensor, device: str) -> bool:
    """Equal up to rounding, relative to the logits' scale.

    Different kernels (a masked attention against a causal one, a matmul on fewer rows) round
    differently: about 1e-4 of the largest logit in fp32 and 1e-2 in bf16. What the checks look
    for is far larger: logits soft-capped or rescaled, or examples seeing each other, move them
    by a sizeable fraction of that scale.
    """
    if actual.shape != expected.shape:
        return False
    tolerance = 1e-3 if training_dtype(device) == torch.float32 else 3e-2
    scale = max(1.0, float(expected.float().abs().max()))
    return float((actual.float() - expected.float()).abs().max()) <= tolerance * scale


def packing_is_exact(model: torch.nn.Module, device: str) -> bool:
    """Whether the model keeps examples packed in one row apart, giving each the logits it
    gets alone. Architectures whose attention ignores packed position_ids would let examples
    see each other; training then pads instead."""
    first = list(range(1, 6))
    second = list(range(6, 9))
    one_row = torch.tensor([first + second], device=device)
    restarting = torch.tensor([list(range(len(first))) + list(range(len(second)))], device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        packed = model(input_ids=one_row, position_ids=restarting, use_cache=False).logits[0]
        alone = torch.cat(
            [
                model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0]
                for ids in (first, second)
            ]
        )
    model.train(was_training)
    return logits_match(packed, alone, device)


# --- batch order --------------------------------------------------------------------------------


def epoch_batch_order(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Example indices of each batch of one epoch, grouped by length, seeded by (seed, epoch).

    The examples are shuffled, cut into groups of BATCHES_PER_LENGTH_GROUP batches, sorted by
    length within each group and cut into batches; then the batches are shuffled. Batches hold
    examples of similar length, so padding costs little, while the order stays random. Groups
    are whole batches, so an epoch has ceil(n / batch_size) batches, like a plain shuffle.
    """
    rng = random.Random(f"ftportal-batch-order:{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group_size = batch_size * BATCHES_PER_LENGTH_GROUP
    batches: list[list[int]] = []
    for start in range(0, len(order), group_size):
        # sorted() is stable: examples of equal length keep their shuffled order.
        group = sorted(order[start : start + group_size], key=lambda i: lengths[i], reverse=True)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass(frozen=True)
class DataPosition:
    """Where the next batch comes from: its epoch, that epoch's batches, and which one is next."""

    epoch: int
    epoch_batches: list[list[int]]
    next_batch: int

    @staticmethod
    def start(lengths: Sequence[int], config: TrainingConfig) -> DataPosition:
        return DataPosition(0, epoch_batch_order(lengths, config.batch_size, config.seed, 0), 0)

    def take(
        self, lengths: Sequence[int], config: TrainingConfig
    ) -> tuple[list[int], DataPosition]:
        """The next batch's example indices, and the position after it."""
        position = self
        if position.next_batch == len(position.epoch_batches):
            epoch = position.epoch + 1
            order = epoch_batch_order(lengths, config.batch_size, config.seed, epoch)
            position = DataPosition(epoch, order, 0)
        batch = position.epoch_batches[position.next_batch]
        return batch, dataclasses.replace(position, next_batch=position.next_batch + 1)


# --- early stopping -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EarlyStopping:
    """The best validation loss so far, its step, and evaluations since without a better one."""

    best_val_loss: float | None = None
    best_step: int | None = None
    evaluations_since_best: int = 0

    def after_evaluation(self, step: int, val_loss: float) -> EarlyStopping:
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            return EarlyStopping(val_loss, step, 0)
        return dataclasses.replace(self, evaluations_since_best=self.evaluations_since_best + 1)

    def patience_exhausted(self, patience: int | None) -> bool:
        return patience is not None and self.evaluations_since_best >= patience


# --- time estimates -----------------------------------------------------------------------------


def evaluations_after(step: int, total_steps: int, eval_every_steps: int) -> int:
    """How many validation evaluations remain after ``step``: every eval_every_steps, plus one at
    the last step when it is not a multiple."""
    if step >= total_steps:
        return 0
    regular = total_steps // eval_every_steps - step // eval_every_steps
    return regular + (1 if total_steps % eval_every_steps else 0)


def estimate_seconds_left(
    *,
    steps_left: int,
    seconds_per_step: float,
    evaluations_left: int,
    seconds_per_evaluation: float,
) -> float:
    return steps_left * seconds_per_step + evaluations_left * seconds_per_evaluation


# --- checkpoints --------------------------------------------------------------------------------

CHECKPOINT_FORMAT = 1
_TRAINER_STATE_FILE = "trainer_state.json"  # step, data position, losses, config: readable
_TENSOR_STATE_FILE = "training_state.pt"  # optimizer, schedule, random number generators
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CHECKPOINT_FILES = (*_ADAPTER_FILES, _TRAINER_STATE_FILE, _TENSOR_STATE_FILE)
# Changing any other field would make a resumed run a different run.
_FIELDS_FREE_ON_RESUME = ("checkpoint_every_steps",)


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS_DIR / f"step-{step:06d}"


@dataclass
class RunState:
    """Everything about a run's progress that is not a tensor; a checkpoint stores it as JSON."""

    step: int
    position: DataPosition
    train_loss: float | None = None
    val_loss: float | None = None
    stopping: EarlyStopping = EarlyStopping()
    # The training loss of the step with the best validation loss, reported with its adapter.
    best_train_loss: float | None = None
    step_tokens: int = 0  # of the last step
    trained_tokens: int = 0
    training_seconds: float = 0.0
    evaluations: int = 0
    evaluation_seconds: float = 0.0

    def to_json(self, config: TrainingConfig, fingerprint: str) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["format"] = CHECKPOINT_FORMAT
        record["config"] = _config_record(config)
        record["train_fingerprint"] = fingerprint
        return record

    @staticmethod
    def from_json(record: dict[str, Any]) -> RunState:
        return RunState(
            step=int(record["step"]),
            position=DataPosition(**record["position"]),
            train_loss=record["train_loss"],
            val_loss=record["val_loss"],
            stopping=EarlyStopping(**record["stopping"]),
            best_train_loss=record["best_train_loss"],
            step_tokens=int(record["step_tokens"]),
            trained_tokens=int(record["trained_tokens"]),
            training_seconds=float(record["training_seconds"]),
            evaluations=int(record["evaluations"]),
            evaluation_seconds=float(record["evaluation_seconds"]),
        )


def _config_record(config: TrainingConfig) -> dict[str, Any]:
    # Through JSON and back, so a tuple and the list it was saved as compare equal.
    loaded: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    return loaded


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back from disk, checked for everything resuming needs."""

    path: Path
    state: RunState
    config: dict[str, Any]
    train_fingerprint: str
    adapter_weights: dict[str, torch.Tensor]
    tensors: dict[str, Any]


def write_atomically(final_dir: Path, write: Callable[[Path], None]) -> None:
    """Write a directory whole or not at all.

    ``write`` fills a temporary directory beside ``final_dir`` (same file system), whose files
    are flushed to disk before one rename publishes it: a process killed meanwhile leaves a
    hidden temporary directory, never a partial ``final_dir``.
    """
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))
    try:
        write(staging)
        _flush_to_disk(staging)
        # mkdtemp makes the directory private (0700); a checkpoint is read like the rest of the
        # output directory, possibly by the web process under another user.
        staging.chmod(0o755)
        if final_dir.exists():
            # The same step written by an earlier attempt of this run (resumed from before it):
            # rename cannot replace a non-empty directory, so move the old one aside first.
            replaced = final_dir.with_name(f".{final_dir.name}.old-{uuid.uuid4().hex}")
            os.replace(final_dir, replaced)
            os.replace(staging, final_dir)
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.replace(staging, final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _flush_to_disk(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as written:
                os.fsync(written.fileno())


def remove_unfinished_checkpoints(output_dir: Path) -> None:
    """Delete what a process killed mid-write left (only hidden temporary directories)."""
    for leftover in (output_dir / CHECKPOINTS_DIR).glob(".step-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint for resuming; ProviderError names the path and what is wrong."""
    problem = f"cannot resume from {path}"
    if not path.is_dir():
        raise ProviderError(f"{problem}: it is not a directory")
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if missing:
        raise ProviderError(
            f"{problem}: the checkpoint is incomplete, missing {', '.join(missing)}"
        )
    try:
        record = json.loads((path / _TRAINER_STATE_FILE).read_text())
        state = RunState.from_json(record)
        config, fingerprint = dict(record["config"]), str(record["train_fingerprint"])
    except (ValueError, TypeError) as error:
        raise ProviderError(f"{problem}: {_TRAINER_STATE_FILE} is unreadable ({error})") from error
    except KeyError as error:
        raise ProviderError(f"{problem}: {_TRAINER_STATE_FILE} lacks {error}") from error
    if record.get("format") != CHECKPOINT_FORMAT:
        raise ProviderError(
            f"{problem}: checkpoint format {record.get('format')!r}, "
            f"this version reads {CHECKPOINT_FORMAT}"
        )
    try:
        tensors = torch.load(path / _TENSOR_STATE_FILE, map_location="cpu", weights_only=True)
        adapter_weights = load_file(str(path / "adapter_model.safetensors"))
    except (RuntimeError, EOFError, OSError, ValueError, SafetensorError) as error:
        raise ProviderError(f"{problem}: a tensor file is unreadable ({error})") from error
    missing_keys = [key for key in _TENSOR_STATE_KEYS if key not in tensors]
    if missing_keys:
        raise ProviderError(f"{problem}: {_TENSOR_STATE_FILE} lacks {', '.join(missing_keys)}")
    return Checkpoint(path, state, config, fingerprint, adapter_weights, tensors)


_TENSOR_STATE_KEYS = ("optimizer", "scheduler", "torch_rng", "cuda_rng", "python_rng")


def check_resumable(checkpoint: Checkpoint, config: TrainingConfig, fingerprint: str) -> None:
    """Refuse to resume a checkpoint into a run that would not continue the same one."""
    saved = {k: v for k, v in checkpoint.config.items() if k not in _FIELDS_FREE_ON_RESUME}
    wanted = {k: v for k, v in _config_record(config).items() if k not in _FIELDS_FREE_ON_RESUME}
    changed = sorted(
        name for name in saved.keys() | wanted.keys() if saved.get(name) != wanted.get(name)
    )
    if changed:
        raise ProviderError(
            f"cannot resume from {checkpoint.path}: it was trained with other settings "
            f"({', '.join(changed)}); resume with the same hyperparameters"
        )
    if checkpoint.train_fingerprint != fingerprint:
        raise ProviderError(
            f"cannot resume from {checkpoint.path}: it was trained on a different training set"
        )


# --- training -----------------------------------------------------------------------------------


def linear_decay(total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: 1 at the first step, falling linearly to 0 after the last, as the
    Hugging Face Trainer's default schedule (linear, no warm-up) does."""

    def factor(completed_steps: int) -> float:
        return max(0.0, (total_steps - completed_steps) / total_steps)

    return factor


@dataclass(frozen=True)
class _Data:
    train: list[EncodedExample]
    validation: list[EncodedExample]
    lengths: list[int]
    fingerprint: str
    skipped_train_examples: int


class LocalLoRAFineTuner:
    """Trains a LoRA adapter on a local base model, with checkpoints it can resume from."""

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
        started = time.monotonic()
        _check_config(config)
        checkpoint = read_checkpoint(resume_from) if resume_from is not None else None
        tokenizer = load_tokenizer(self.base_model_dir)
        data = _encode(tokenizer, train, validation, config)
        if checkpoint is not None:
            check_resumable(checkpoint, config, data.fingerprint)
        run = _TrainingRun(
            model=self._build_peft_model(config),
            data=data,
            config=config,
            device=self.device,
            pad_token_id=int(tokenizer.pad_token_id),
            output_dir=output_dir,
        )
        if checkpoint is not None:
            run.restore(checkpoint)
        remove_unfinished_checkpoints(output_dir)
        run.train(on_progress, should_stop, on_checkpoint or _ignore_checkpoint)

        run.save_result_adapter(output_dir)
        tokenizer.save_pretrained(output_dir)
        state = run.state
        # Under early stopping the result is the best adapter, whether or not it stopped early.
        keeps_best = (
            config.early_stopping_patience is not None and state.stopping.best_step is not None
        )
        return TrainingResult(
            adapter_dir=output_dir,
            steps=state.step,
            train_loss=state.best_train_loss if keeps_best else state.train_loss,
            val_loss=state.stopping.best_val_loss if keeps_best else state.val_loss,
            device=self.device,
            seconds=time.monotonic() - started,
            metrics={
                "train_examples": float(len(data.train)),
                "skipped_train_examples": float(data.skipped_train_examples),
                "validation_examples": float(len(data.validation)),
                "trained_tokens": float(state.trained_tokens),
                "tokens_per_second": run.tokens_per_second() or 0.0,
            },
            best_step=state.stopping.best_step if keeps_best else state.step,
            stopped_early=run.stopped_early,
            trained_tokens=state.trained_tokens,
        )

    def _build_peft_model(self, config: TrainingConfig) -> PeftModel:
        # LoRA's A matrices are initialised randomly; a resumed run overwrites them.
        torch.manual_seed(config.seed)
        base = _load_base_model(self.base_model_dir, self.device)
        base.config.use_cache = False  # the KV cache only helps generation
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        )
        try:
            model = get_peft_model(base, lora)
        except ValueError as error:
            raise ProviderError(
                f"cannot put LoRA on {', '.join(config.target_modules)} of the model in "
                f"{self.base_model_dir}: {error}"
            ) from error
        if not isinstance(model, PeftModel):
            raise ProviderError("peft returned a mixed-adapter model, which training does not use")
        return model


def _ignore_checkpoint(_saved: CheckpointSaved) -> None:
    pass


def _encode(
    tokenizer: PreTrainedTokenizerBase,
    train: Sequence[Conversation],
    validation: Sequence[Conversation],
    config: TrainingConfig,
) -> _Data:
    if not train:
        raise ProviderError("the training set is empty; add at least one conversation")
    encoded = [
        encode_for_training(tokenizer, conversation, config.max_seq_len) for conversation in train
    ]
    # A conversation with no assistant reply (or one cut off by max_seq_len) teaches nothing
    # and would divide by zero tokens.
    usable = [example for example in encoded if example.supervised_tokens > 0]
    if not usable:
        raise ProviderError(
            "no training conversation has an assistant reply within "
            f"max_seq_len={config.max_seq_len} tokens"
        )
    validation_examples = [
        encode_for_training(tokenizer, conversation, config.max_seq_len)
        for conversation in validation
    ]
    if config.early_stopping_patience is not None and not any(
        example.supervised_tokens for example in validation_examples
    ):
        raise ProviderError(
            "early stopping watches the validation loss, but the validation set has no "
            f"assistant reply within max_seq_len={config.max_seq_len} tokens; add validation "
            "conversations or turn early stopping off"
        )
    return _Data(
        train=usable,
        validation=validation_examples,
        lengths=[len(example.input_ids) for example in usable],
        fingerprint=training_set_fingerprint(usable),
        skipped_train_examples=len(encoded) - len(usable),
    )


class _TrainingRun:
    """One run's model, optimizer, schedule and progress, from a fresh start or a checkpoint."""

    def __init__(
        self,
        *,
        model: PeftModel,
        data: _Data,
        config: TrainingConfig,
        device: str,
        pad_token_id: int,
        output_dir: Path,
    ) -> None:
        self.model = model
        self.data = data
        self.config = config
        self.device = device
        self.pad_token_id = pad_token_id
        self.output_dir = output_dir
        self.plan = step_plan(len(data.train), config)
        self.token_loss = token_loss_for(model, device)
        self.collate: Collate = collate_packed if packing_is_exact(model, device) else collate
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=config.learning_rate, weight_decay=WEIGHT_DECAY
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_decay(self.plan.total_steps)
        )
        self.state = RunState(step=0, position=DataPosition.start(data.lengths, config))
        # The adapter weights of the best validation loss, kept (on the CPU) only when early
        # stopping will hand them back as the result.
        self.best_adapter: dict[str, torch.Tensor] | None = None
        self.stopped_early = False

    def restore(self, checkpoint: Checkpoint) -> None:
        loaded = set_peft_model_state_dict(self.model, checkpoint.adapter_weights)
        unexpected: list[str] = list(getattr(loaded, "unexpected_keys", []))
        if unexpected:
            raise ProviderError(
                f"cannot resume from {checkpoint.path}: its adapter does not fit this model "
                f"(unexpected weights {', '.join(unexpected[:3])})"
            )
        tensors = checkpoint.tensors
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.scheduler.load_state_dict(tensors["scheduler"])
        self.best_adapter = tensors.get("best_adapter")
        self.state = checkpoint.state
        self.stopped_early = self.state.stopping.patience_exhausted(
            self.config.early_stopping_patience
        )
        # Last, so that building the model above draws nothing from the restored streams.
        torch.set_rng_state(tensors["torch_rng"])
        if tensors["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(tensors["cuda_rng"])
        random.setstate(tensors["python_rng"])

    def train(
        self,
        on_progress: Callable[[TrainingProgress], None],
        should_stop: Callable[[], bool],
        on_checkpoint: Callable[[CheckpointSaved], None],
    ) -> None:
        config, state = self.config, self.state
        while state.step < self.plan.total_steps and not self.stopped_early:
            if should_stop():
                raise TrainingCancelled(f"training stopped by request before step {state.step + 1}")
            learning_rate = self._step()
            step_val_loss, new_best = self._evaluate_if_due()
            self.stopped_early = state.stopping.patience_exhausted(config.early_stopping_patience)
            on_progress(self._progress(learning_rate, step_val_loss))
            if self._checkpoint_due(new_best):
                on_checkpoint(self._save_checkpoint())

    def _step(self) -> float:
        """One optimizer update on the next batch; returns the learning rate it used."""
        state = self.state
        indices, state.position = state.position.take(self.data.lengths, self.config)
        examples = [self.data.train[index] for index in indices]
        learning_rate = float(self.optimizer.param_groups[0]["lr"])
        began = time.perf_counter()
        batch = self.collate(examples, self.pad_token_id, self.device)
        self.model.train()
        loss_sum, token_count = self.token_loss(batch)
        loss = loss_sum / token_count
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        state.train_loss = loss.item()
        state.training_seconds += time.perf_counter() - began
        state.step += 1
        state.step_tokens = input_tokens(examples)
        state.trained_tokens += state.step_tokens
        return learning_rate

    def _evaluation_due(self) -> bool:
        step = self.state.step
        return step % self.config.eval_every_steps == 0 or step == self.plan.total_steps

    def _evaluate_if_due(self) -> tuple[float | None, bool]:
        """The validation loss when one is due this step, and whether it is a new best."""
        state = self.state
        if not self._evaluation_due() or not self.data.validation:
            return None, False
        began = time.perf_counter()
        val_loss = validation_loss(
            self.model,
            self.token_loss,
            self.collate,
            self.data.validation,
            self.config.batch_size,
            self.pad_token_id,
            self.device,
        )
        state.evaluation_seconds += time.perf_counter() - began
        state.evaluations += 1
        if val_loss is None:
            return None, False
        state.val_loss = val_loss
        state.stopping = state.stopping.after_evaluation(state.step, val_loss)
        new_best = state.stopping.best_step == state.step
        if new_best:
            state.best_train_loss = state.train_loss
            if self.config.early_stopping_patience is not None:
                self.best_adapter = _adapter_weights_on_cpu(self.model)
        return val_loss, new_best

    def _progress(self, learning_rate: float, val_loss: float | None) -> TrainingProgress:
        state = self.state
        return TrainingProgress(
            step=state.step,
            total_steps=self.plan.total_steps,
            epoch=state.step / self.plan.steps_per_epoch,
            train_loss=state.train_loss,
            val_loss=val_loss,
            learning_rate=learning_rate,
            step_tokens=state.step_tokens,
            tokens_per_second=self.tokens_per_second(),
            seconds_left=0.0 if self.stopped_early else self._seconds_left(),
        )

    def tokens_per_second(self) -> float | None:
        # Training tokens over training seconds: time spent on validation and on writing
        # checkpoints is left out, so the rate measures training alone.
        state = self.state
        return state.trained_tokens / state.training_seconds if state.training_seconds else None

    def _seconds_left(self) -> float:
        state = self.state
        evaluations_left = 0
        if self.data.validation:
            evaluations_left = evaluations_after(
                state.step, self.plan.total_steps, self.config.eval_every_steps
            )
        return estimate_seconds_left(
            steps_left=self.plan.total_steps - state.step,
            seconds_per_step=state.training_seconds / state.step,
            evaluations_left=evaluations_left,
            seconds_per_evaluation=self._seconds_per_evaluation(),
        )

    def _seconds_per_evaluation(self) -> float:
        state = self.state
        if state.evaluations:
            return state.evaluation_seconds / state.evaluations
        # Not measured yet: guess from the training rate. An evaluation is a forward pass, about
        # half of a LoRA step's compute (the backward pass computes activation gradients only,
        # about as costly as the forward), hence the factor 2.
        rate = self.tokens_per_second()
        return input_tokens(self.data.validation) / rate / 2 if rate else 0.0

    def _checkpoint_due(self, new_best: bool) -> bool:
        every = self.config.checkpoint_every_steps
        if every == 0:
            return False
        last = self.state.step == self.plan.total_steps or self.stopped_early
        # With early stopping, each new best is saved too, so that the adapter kept as the
        # result is one of the checkpoints (each can be registered as a model version).
        best = new_best and self.config.early_stopping_patience is not None
        return self.state.step % every == 0 or last or best

    def _save_checkpoint(self) -> CheckpointSaved:
        state = self.state
        directory = checkpoint_dir(self.output_dir, state.step)
        write_atomically(directory, self._write_checkpoint)
        return CheckpointSaved(
            step=state.step, path=directory, train_loss=state.train_loss, val_loss=state.val_loss
        )

    def _write_checkpoint(self, directory: Path) -> None:
        self.model.save_pretrained(str(directory))
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.startswith("cuda") else None
        tensors = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": cuda_rng,
            "python_rng": random.getstate(),
            "best_adapter": self.best_adapter,
        }
        torch.save(tensors, directory / _TENSOR_STATE_FILE)
        record = self.state.to_json(self.config, self.data.fingerprint)
        (directory / _TRAINER_STATE_FILE).write_text(json.dumps(record, indent=1) + "\n")

    def save_result_adapter(self, output_dir: Path) -> None:
        """Save the adapter the result names: the best one under early stopping, else the last."""
        if self.config.early_stopping_patience is not None and self.best_adapter is not None:
            set_peft_model_state_dict(self.model, self.best_adapter)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(output_dir))


def _adapter_weights_on_cpu(model: PeftModel) -> dict[str, torch.Tensor]:
    weights = get_peft_model_state_dict(model)
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights.items()}


def validation_loss(
    model: torch.nn.Module,
    token_loss: TokenLoss,
    to_batch: Collate,
    examples: Sequence[EncodedExample],
    batch_size: int,
    pad_token_id: int,
    device: str,
) -> float | None:
    """Mean loss per reply token over the whole validation set; None when it has no reply."""
    # The loss is a sum over examples, so any order gives it; length order pads least.
    by_length = sorted(examples, key=lambda example: len(example.input_ids))
    model.eval()
    total_loss = 0.0
    total_tokens = 0
    with torch.no_grad():
        for start in range(0, len(by_length), batch_size):
            batch = to_batch(by_length[start : start + batch_size], pad_token_id, device)
            loss_sum, token_count = token_loss(batch)
            total_loss += loss_sum.item()
            total_tokens += token_count
    return total_loss / total_tokens if total_tokens else None


def _check_config(config: TrainingConfig) -> None:
    for name in ("epochs", "batch_size", "eval_every_steps", "max_seq_len", "lora_r"):
        if getattr(config, name) < 1:
            raise ProviderError(f"{name} must be at least 1, not {getattr(config, name)}")
    if config.max_steps is not None and config.max_steps < 1:
        raise ProviderError(f"max_steps must be at least 1 when set, not {config.max_steps}")
    if config.checkpoint_every_steps < 0:
        raise ProviderError(
            f"checkpoint_every_steps must be 0 (final adapter only) or more, "
            f"not {config.checkpoint_every_steps}"
        )
    if config.early_stopping_patience is not None and config.early_stopping_patience < 1:
        raise ProviderError(
            f"early_stopping_patience must be at least 1 when set, "
            f"not {config.early_stopping_patience}"
        )
    if not config.learning_rate > 0:
        raise ProviderError(f"learning_rate must be positive, not {config.learning_rate}")
    if not 0 <= config.lora_dropout < 1:
        raise ProviderError(f"lora_dropout must be in [0, 1), not {config.lora_dropout}")
    if not config.target_modules:
        raise ProviderError("target_modules must name at least one module to put LoRA on")


# --- generation ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=MODEL_CACHE_SIZE)
def _load_for_generation(
    base_model_dir: Path, adapter_dir: Path | None, device: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = _load_base_model(base_model_dir, device)
    tokenizer = load_tokenizer(base_model_dir)
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

    def model_and_tokenizer(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The model generate_batch uses (loaded on first use, then kept), and its tokenizer."""
        return _load_for_generation(self.base_model_dir, self.adapter_dir, self.device)

    def generate_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 128,
        batch_size: int = 16,
        on_batch: Callable[[list[int], list[Generation]], None] | None = None,
        constraint: AnswerConstraint | None = None,
    ) -> list[Generation]:
        """One greedy reply per conversation, in input order.

        on_batch, if given, is called after each batch with the input indices it covered and
        their generations, so that a caller can save progress before the whole list is done.
        With a constraint, every reply is one the constraint allows, unless max_new_tokens cut
        it short (see providers.constraints).
        """
        if batch_size < 1:
            raise ProviderError("batch_size must be at least 1")
        if max_new_tokens < 1:
            raise ProviderError("max_new_tokens must be at least 1")
        model, tokenizer = self.model_and_tokenizer()
        prompts = [
            _token_ids(tokenizer, _render(tokenizer, list(c), add_generation_prompt=True))
            for c in conversations
        ]
        stop_ids = _stop_token_ids(model, tokenizer, self.device)
        guide = None
        if constraint is not None:
            guide = TokenGuide(
                constraint,
                tokenizer,
                vocab_size=int(model.config.vocab_size),
                stop_ids=stop_ids.tolist(),
            )
        # Batching prompts of similar length wastes less compute on padding.
        order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
        results: dict[int, Generation] = {}
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            batch = [prompts[i] for i in indices]
            completions = greedy_decode(
                model, batch, max_new_tokens, stop_ids, self.device, guide=guide
            )
            generations = [
                _to_generation(tokenizer, completion, len(prompt))
                for completion, prompt in zip(completions, batch, strict=True)
            ]
            results.update(zip(indices, generations, strict=True))
            if on_batch is not None:
                on_batch(indices, generations)
        return [results[index] for index in range(len(prompts))]

    def generate_many(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_size: int = 16,
        constraint: AnswerConstraint | None = None,
        before_batch: Callable[[], None] | None = None,
        on_result: OnResult | None = None,
    ) -> list[ChatResult]:
        """The ChatModel protocol: the conversations in input order, ``batch_size`` at a
        time, each batch answered together (generate_batch) and then reported, so a caller
        can store a batch before the next one starts. A batch answers together, so each
        answer's latency is its share of the batch's time: what it cost here. Decoding is
        greedy, whatever the ``temperature``."""
        del temperature
        if batch_size < 1:
            raise ProviderError("batch_size must be at least 1")
        results: list[ChatResult] = []
        for start in range(0, len(conversations), batch_size):
            if before_batch is not None:
                before_batch()
            batch = conversations[start : start + batch_size]
            began = time.monotonic()
            generations = self.generate_batch(
                batch, max_new_tokens=max_new_tokens, batch_size=batch_size, constraint=constraint
            )
            share = (time.monotonic() - began) / len(batch)
            for offset, generation in enumerate(generations):
                result = ChatResult(
                    text=generation.text,
                    prompt_tokens=generation.prompt_tokens,
                    completion_tokens=generation.completion_tokens,
                    latency_seconds=share,
                    attempts=1,
                )
                results.append(result)
                if on_result is not None:
                    on_result(start + offset, result)
        return results

    def close(self) -> None:
        """Nothing to release: the loaded model stays cached for the next one."""


def _stop_token_ids(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: str
) -> torch.Tensor:
    # The tokens generate() stops at: the generation config's (one id or several), else the
    # tokenizer's end-of-sequence token.
    configured = model.generation_config.eos_token_id
    if configured is None:
        configured = tokenizer.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return torch.tensor(ids, dtype=torch.long, device=device)


# The KV cache grows by this many positions at a time, so that most decoding steps write into
# room already there instead of copying the whole cache (as torch.cat would, every step).
KV_CACHE_GROWTH = 64


class GrowingKVLayer(DynamicLayer):
    """One layer's KV cache in a buffer with spare room; keys and values are views of its start."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.key_buffer = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[3]))
        self.value_buffer = value_states.new_empty(
            (*value_states.shape[:2], 0, value_states.shape[3])
        )
        self.length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[2]
        if end > self.key_buffer.shape[2]:
            self._grow(end + KV_CACHE_GROWTH)
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        return self._expose()

    def _grow(self, capacity: int) -> None:
        def grown(buffer: torch.Tensor) -> torch.Tensor:
            larger = buffer.new_empty((*buffer.shape[:2], capacity, buffer.shape[3]))
            larger[:, :, : self.length] = buffer[:, :, : self.length]
            return larger

        self.key_buffer = grown(self.key_buffer)
        self.value_buffer = grown(self.value_buffer)

    def _expose(self) -> tuple[torch.Tensor, torch.Tensor]:
        # DynamicLayer's own methods (get_seq_length, the mask sizes) read keys and values.
        keys = self.keys = self.key_buffer[:, :, : self.length]
        values = self.values = self.value_buffer[:, :, : self.length]
        return keys, values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer[indices]
            self.value_buffer = self.value_buffer[indices]
            self._expose()


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all prompts share, leaving each at least one token of its own.

    Chat prompts usually start alike (the template's system prompt), so the shared part is run
    through the model once and its KV cache copied to every row. Each prompt keeps at least its
    last token, since its first generated token is predicted from there.
    """
    limit = min(len(prompt) for prompt in prompts) - 1
    first = prompts[0]
    for position in range(limit):
        if any(prompt[position] != first[position] for prompt in prompts):
            return position
    return max(limit, 0)


@dataclass
class _DecodingState:
    """The rows still being decoded, with what each next step needs about them."""

    rows: list[int]  # index into the batch of each live row
    cache: Cache
    attention_mask: torch.Tensor  # (live rows, cached positions)
    next_positions: torch.Tensor  # (live rows,) position id of the token each row feeds next

    def keep(self, live: torch.Tensor) -> None:
        """Drops the rows that finished, so that later steps compute only for the others."""
        kept = live.nonzero().squeeze(1)
        self.rows = [self.rows[index] for index in kept.tolist()]
        self.cache.batch_select_indices(kept)
        self.attention_mask = self.attention_mask[kept]
        self.next_positions = self.next_positions[kept]


def _prefill(
    model: PreTrainedModel, prompts: Sequence[Sequence[int]], device: str
) -> tuple[torch.Tensor, _DecodingState]:
    """Runs the prompts through the model: the next-token logits of each, and the state after.

    The shared prefix runs once; the rest of each prompt is left-padded, so that all rows end
    flush right, giving per row the layout [shared prefix][padding][own tokens]. The padding is
    masked out and position ids count only real tokens, so every row sees exactly what it would
    see alone, unpadded.
    """
    batch = len(prompts)
    prefix = shared_prefix_length(prompts)
    cache = Cache(layer_class_to_replicate=GrowingKVLayer)
    if prefix:
        model(
            input_ids=torch.tensor([prompts[0][:prefix]], device=device),
            position_ids=torch.arange(prefix, device=device).unsqueeze(0),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache.batch_repeat_interleave(batch)
    width = max(len(prompt) for prompt in prompts) - prefix
    # Padding positions hold token 0; they are masked, so which token it is does not matter.
    input_ids = torch.zeros((batch, width), dtype=torch.long)
    attention_mask = torch.zeros((batch, prefix + width), dtype=torch.long)
    attention_mask[:, :prefix] = 1
    position_ids = torch.zeros((batch, width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        own = prompt[prefix:]
        input_ids[row, width - len(own) :] = torch.tensor(own)
        attention_mask[row, prefix + width - len(own) :] = 1
        position_ids[row, width - len(own) :] = torch.arange(prefix, len(prompt))
    attention_mask = attention_mask.to(device)
    output = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask,
        position_ids=position_ids.to(device),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,  # only the last position's logits are needed, not the prompt's
    )
    lengths = torch.tensor([len(prompt) for prompt in prompts], device=device)
    state = _DecodingState(list(range(batch)), cache, attention_mask, lengths)
    return output.logits[:, -1], state


def greedy_decode(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_ids: torch.Tensor,
    device: str,
    *,
    guide: TokenGuide | None = None,
) -> list[list[int]]:
    """Greedy continuations of a batch of prompts, each up to and including its stop token.

    With a guide, each row picks its greedy token among those its grammar allows at that step
    (the others' logits masked out), so each row writes an answer the constraint allows; without
    one, nothing is masked and nothing else changes.

    The same tokens as model.generate(do_sample=False) on each prompt alone. At batch 32 on
    CPU nearly all the time goes to the model's matrix products, so what this loop saves over
    a batched generate() is work generate() cannot skip: the prompts' shared prefix computed
    once instead of once per row (about half of the prompt compute for chat prompts with the
    template's system prompt), the KV cache written in place instead of copied every step,
    and rows that stopped dropped from the batch instead of decoded on until the longest ends.
    On CPU the products themselves run through oneDNN (see providers.cpu_matmul).
    """
    completions: list[list[int]] = [[] for _ in prompts]
    if not prompts:
        return completions
    matchers = guide.start(len(prompts)) if guide is not None else None
    with torch.inference_mode(), onednn_linear():
        logits, state = _prefill(model, prompts, device)
        for step in range(max_new_tokens):
            if matchers is not None:
                logits = matchers.mask_logits(logits, state.rows)
            tokens = logits.argmax(dim=-1)
            picked = tokens.tolist()
            for row, token in zip(state.rows, picked, strict=True):
                completions[row].append(token)
            if matchers is not None:
                matchers.advance(state.rows, picked)
            live = ~torch.isin(tokens, stop_ids)
            if step == max_new_tokens - 1 or not bool(live.any()):
                break
            if not bool(live.all()):
                state.keep(live)
                tokens = tokens[live]
            ones = state.attention_mask.new_ones((len(state.rows), 1))
            state.attention_mask = torch.cat([state.attention_mask, ones], dim=1)
            logits = model(
                input_ids=tokens.unsqueeze(1),
                attention_mask=state.attention_mask,
                position_ids=state.next_positions.unsqueeze(1),
                cache=state.cache,
                use_cache=True,
            ).logits[:, -1]
            state.next_positions = state.next_positions + 1
    return completions


def _to_generation(
    tokenizer: PreTrainedTokenizerBase, new_tokens: list[int], prompt_tokens: int
) -> Generation:
    # Decoding stops at the end-of-turn token; count up to and including that token, which the
    # model did generate.
    completion = new_tokens
    if tokenizer.eos_token_id in new_tokens:
        completion = new_tokens[: new_tokens.index(tokenizer.eos_token_id) + 1]
    text = tokenizer.decode(completion, skip_special_tokens=True)
    if not isinstance(text, str):
        raise ProviderError("the tokenizer decoded one sequence into several texts")
    return Generation(
        text=text.strip(), prompt_tokens=prompt_tokens, completion_tokens=len(completion)
    )
