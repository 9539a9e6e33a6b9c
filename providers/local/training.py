"""LoRA fine-tuning of a local base model with transformers + peft, on CPU or one GPU,
synchronously in the calling process (a Celery worker), with checkpoints it can resume from.

What makes training fast spends no compute on tokens that teach nothing:
- batches group examples of similar length (providers.batching.epoch_batch_order), and each
  batch is packed several examples to a row (encoding.collate_packed), so almost no padding
  goes through the model; where the batch's examples start alike (a system prompt, the chat
  template's header), the batch runs that shared start once, and every example continues from
  its keys and values, packed several to a row (encoding.collate_sharing_prefix);
- the output head (a 49k-word vocabulary for SmolLM2, about a fifth of the model's FLOPs per
  token) and the cross-entropy run only at positions whose next token is labelled (loss.py);
- the frozen weights are in the precision, and attention runs in the kernel, that a probe
  measured fastest on this host (precision.py), and LoRA's dropout draws half the random
  numbers torch's would (dropout.py).
Each gives the plain computation's loss and gradients (tests/providers/test_local_speed.py),
and each is checked on the loaded model before training relies on it (loss.collate_for,
token_loss_for), falling back to the plain way for architectures where it would not hold.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from providers.base import (
    MEASURED_CPU_COSTS,
    VALIDATION_METRICS,
    CheckpointSaved,
    Conversation,
    ProviderError,
    TrainingCancelled,
    TrainingConfig,
    TrainingProgress,
    TrainingResult,
    TrainingSetupReport,
    default_intervals,
    step_plan,
)
from providers.batching import length_sorted_batches

from .checkpoints import (
    TENSOR_STATE_FILE,
    TRAINER_STATE_FILE,
    Checkpoint,
    RunState,
    check_resumable,
    checkpoint_dir,
    read_checkpoint,
    remove_unfinished_checkpoints,
    write_atomically,
)
from .dropout import use_half_draw_dropout
from .encoding import (
    Collate,
    DataPosition,
    EncodedExample,
    encode_for_training,
    input_tokens,
    training_set_fingerprint,
)
from .label_accuracy import LabelAccuracy, label_questions
from .loading import load_base_model, load_tokenizer, pick_device
from .loss import TokenLoss, collate_for, token_loss_for
from .precision import AdapterShape, HostChoice, TrainingSetup, given_choice, host_choice
from .utilisation import ModelFlops, utilisation

MAX_GRAD_NORM = 1.0
# torch.optim.AdamW's own default, named so that the benchmark's baseline can use the same.
WEIGHT_DECAY = 0.01

# --- time estimates -----------------------------------------------------------------------------


def estimate_seconds_left(
    *,
    steps_left: int,
    seconds_per_step: float,
    evaluations_left: int,
    seconds_per_evaluation: float,
) -> float:
    return steps_left * seconds_per_step + evaluations_left * seconds_per_evaluation


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

    def __init__(
        self,
        base_model_dir: Path,
        device: str | None = None,
        setup: TrainingSetup | None = None,
        kept_probes: Path | None = None,
    ) -> None:
        self.base_model_dir = base_model_dir
        self.device = pick_device(device)
        # None measures the fastest setup on this host (precision.py).
        self.setup = setup
        # Where the measurement is kept for this host's later workers; None measures once
        # per process (kept_probe.py).
        self.kept_probes = kept_probes

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
        # A job launched through the product has its intervals chosen already; a config that
        # leaves one unset gets it here, by the same rule.
        config = default_intervals(
            config,
            train_examples=len(data.train),
            train_tokens_per_epoch=input_tokens(data.train),
            validation_tokens=input_tokens(data.validation),
        )
        if checkpoint is not None:
            check_resumable(checkpoint, config, data.fingerprint)
        choice = self.host_choice(config)
        model = self._build_peft_model(config)
        run = _TrainingRun(
            model=model,
            label_accuracy=_label_accuracy(model, tokenizer, validation, config, self.device),
            data=data,
            config=config,
            device=self.device,
            pad_token_id=int(tokenizer.pad_token_id),
            output_dir=output_dir,
        )
        if checkpoint is not None:
            run.restore(checkpoint)
        remove_unfinished_checkpoints(output_dir)
        load_seconds = time.monotonic() - started
        run.train(on_progress, should_stop, on_checkpoint or _ignore_checkpoint)

        run.save_result_adapter(output_dir)
        tokenizer.save_pretrained(output_dir)
        state = run.state
        mfu = utilisation(run.trained_flops(), state.training_seconds, choice.peak_flops)
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
                # Fewer than trained where batches ran their shared prefix once.
                "computed_tokens": float(state.computed_tokens),
                "tokens_per_second": run.tokens_per_second() or 0.0,
                # What the launch estimate of later jobs on this worker learns from
                # (training.estimates): validation passes over the whole job, resumed or not,
                # and this attempt's checkpoint saves and loading.
                "validation_passes": float(state.evaluations),
                "validation_seconds": state.evaluation_seconds,
                "validation_tokens": float(input_tokens(data.validation)),
                # How the batches were laid out, and the tokens a validation pass ran: what
                # the estimate of a later job on other data scales its speeds by.
                "shares_prefix": float(run.layout == "sharing its prefix"),
                **(
                    {"validation_computed_tokens": float(run.validation_computed_tokens)}
                    if run.validation_computed_tokens is not None
                    else {}
                ),
                "checkpoint_saves": float(run.saves),
                "checkpoint_seconds": run.save_seconds,
                "load_seconds": load_seconds,
                "eval_every_steps": float(config.eval_every_steps or 0),
                "checkpoint_every_steps": float(config.checkpoint_every_steps or 0),
                "peak_flops": choice.peak_flops,
            },
            best_step=state.stopping.best_step if keeps_best else state.step,
            stopped_early=run.stopped_early,
            trained_tokens=state.trained_tokens,
            val_accuracy=state.stopping.best_accuracy if keeps_best else state.val_accuracy,
            precision=choice.setup.precision,
            model_flops_utilization=mfu,
        )

    def host_choice(self, config: TrainingConfig) -> HostChoice:
        """The precision and attention kernel this config trains with here (precision.py),
        measured on first use in this process unless the fine-tuner was given one."""
        if self.setup is not None:
            return given_choice(self.setup, self.device)
        adapter = AdapterShape(config.lora_r, tuple(config.target_modules))
        return host_choice(self.base_model_dir, self.device, adapter, self.kept_probes)

    def describe_setup(self, config: TrainingConfig) -> TrainingSetupReport:
        choice = self.host_choice(config)
        return TrainingSetupReport(choice.setup.precision, choice.describe())

    def _build_peft_model(self, config: TrainingConfig) -> PeftModel:
        setup = self.host_choice(config).setup
        # LoRA's A matrices are initialised randomly; a resumed run overwrites them.
        torch.manual_seed(config.seed)
        base = load_base_model(
            self.base_model_dir, self.device, dtype=setup.dtype, attention=setup.attention
        )
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
        use_half_draw_dropout(model)
        return model


def _ignore_checkpoint(_saved: CheckpointSaved) -> None:
    pass


def _label_accuracy(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    validation: Sequence[Conversation],
    config: TrainingConfig,
    device: str,
) -> LabelAccuracy | None:
    """What measures the validation label accuracy when the config asks for it; None when it
    does not, or when there is no validation set (no pass runs then)."""
    if config.validation_metric != "label_accuracy" or not validation:
        return None
    return LabelAccuracy(
        model, tokenizer, config.validation_labels, label_questions(tokenizer, validation), device
    )


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
        label_accuracy: LabelAccuracy | None,
        data: _Data,
        config: TrainingConfig,
        device: str,
        pad_token_id: int,
        output_dir: Path,
    ) -> None:
        self.model = model
        self.label_accuracy = label_accuracy
        self.data = data
        self.config = config
        self.device = device
        self.pad_token_id = pad_token_id
        self.output_dir = output_dir
        self.plan = step_plan(len(data.train), config)
        base = model.get_base_model()
        self.flops = ModelFlops.of(base) if isinstance(base, PreTrainedModel) else ModelFlops(0, 0)
        self.token_loss = token_loss_for(model, device)
        self.layout, self.collate = collate_for(model, device)
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
        # This attempt's checkpoint saves and their seconds (the estimate's save cost).
        self.saves = 0
        self.save_seconds = 0.0
        # Tokens a validation pass runs (fewer than it holds where batches share a prefix);
        # None until this attempt has run one.
        self.validation_computed_tokens: int | None = None

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
        self.stopped_early = self._patience_ended_it()
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
        state = self.state
        while state.step < self.plan.total_steps and not self.stopped_early:
            if should_stop():
                raise TrainingCancelled(f"training stopped by request before step {state.step + 1}")
            learning_rate = self._step()
            new_best = self._evaluate_if_due()
            self.stopped_early = self._patience_ended_it()
            on_progress(self._progress(learning_rate, evaluated=self._evaluation_due()))
            if self._checkpoint_due(new_best):
                on_checkpoint(self._save_checkpoint())

    def _patience_ended_it(self) -> bool:
        """Whether early stopping ends the run before its last step (patience running out at
        the last step saves nothing: the run keeps its best step all the same)."""
        exhausted = self.state.stopping.patience_exhausted(self.config.early_stopping_patience)
        return exhausted and self.state.step < self.plan.total_steps

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
        state.computed_tokens += batch.computed_tokens or state.step_tokens
        return learning_rate

    @property
    def eval_every(self) -> int:
        # default_intervals set it before the run was built.
        assert self.config.eval_every_steps is not None
        return self.config.eval_every_steps

    def _evaluation_due(self) -> bool:
        step = self.state.step
        return step % self.eval_every == 0 or step == self.plan.total_steps

    def _evaluate_if_due(self) -> bool:
        """Validates when a pass is due this step; whether it found a new best."""
        state = self.state
        if not self._evaluation_due() or not self.data.validation:
            return False
        began = time.perf_counter()
        val_loss, self.validation_computed_tokens = validation_loss(
            self.model,
            self.token_loss,
            self.collate,
            self.data.validation,
            self.config.batch_size,
            self.pad_token_id,
            self.device,
        )
        accuracy = None
        if val_loss is not None and self.label_accuracy is not None:
            accuracy = self.label_accuracy.measure(self.model)
        state.evaluation_seconds += time.perf_counter() - began
        state.evaluations += 1
        if val_loss is None:
            return False
        state.val_loss = val_loss
        state.val_accuracy = accuracy
        state.stopping = state.stopping.after_evaluation(state.step, val_loss, accuracy)
        new_best = state.stopping.best_step == state.step
        if new_best:
            state.best_train_loss = state.train_loss
            if self.config.early_stopping_patience is not None:
                self.best_adapter = _adapter_weights_on_cpu(self.model)
        return new_best

    def _progress(self, learning_rate: float, *, evaluated: bool) -> TrainingProgress:
        """This step's progress, with the validation figures when it validated."""
        state = self.state
        validated = evaluated and bool(self.data.validation)
        return TrainingProgress(
            step=state.step,
            total_steps=self.plan.total_steps,
            epoch=state.step / self.plan.steps_per_epoch,
            train_loss=state.train_loss,
            val_loss=state.val_loss if validated else None,
            val_accuracy=state.val_accuracy if validated else None,
            learning_rate=learning_rate,
            step_tokens=state.step_tokens,
            tokens_per_second=self.tokens_per_second(),
            seconds_left=0.0 if self.stopped_early else self._seconds_left(),
        )

    def trained_flops(self) -> float:
        """Model FLOPs of the tokens the model ran so far (utilisation.py): a shared prefix
        counts once a batch, so utilisation measures the work done, not the work saved. The
        labelled share of the trained tokens is taken as the training set's."""
        inputs = input_tokens(self.data.train)
        labelled = sum(example.supervised_tokens for example in self.data.train)
        state = self.state
        return self.flops.of_tokens(
            state.computed_tokens, state.trained_tokens * labelled / inputs if inputs else 0.0
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
            evaluations_left = self.plan.evaluations_after(state.step, self.eval_every)
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
        # Not measured yet: guess from the training rate. An evaluation is a forward pass, cheaper
        # a token than a training step by the ratio measured for the launch estimate.
        rate = self.tokens_per_second()
        ratio = MEASURED_CPU_COSTS.validation_cost_ratio
        return input_tokens(self.data.validation) / rate * ratio if rate else 0.0

    def _checkpoint_due(self, new_best: bool) -> bool:
        every = self.config.checkpoint_every_steps
        if not every:
            return False
        last = self.state.step == self.plan.total_steps or self.stopped_early
        # With early stopping, each new best is saved too, so that the adapter kept as the
        # result is one of the checkpoints (each can be registered as a model version).
        best = new_best and self.config.early_stopping_patience is not None
        return self.state.step % every == 0 or last or best

    def _save_checkpoint(self) -> CheckpointSaved:
        state = self.state
        began = time.perf_counter()
        directory = checkpoint_dir(self.output_dir, state.step)
        write_atomically(directory, self._write_checkpoint)
        self.saves += 1
        self.save_seconds += time.perf_counter() - began
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
        torch.save(tensors, directory / TENSOR_STATE_FILE)
        record = self.state.to_json(self.config, self.data.fingerprint)
        (directory / TRAINER_STATE_FILE).write_text(json.dumps(record, indent=1) + "\n")

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
) -> tuple[float | None, int]:
    """Mean loss per reply token over the whole validation set (None when it has no reply),
    and how many tokens the model ran for it."""
    lengths = [len(example.input_ids) for example in examples]
    model.eval()
    total_loss = 0.0
    total_tokens = 0
    computed = 0
    with torch.no_grad():
        for indices in length_sorted_batches(lengths, batch_size):
            batch = to_batch([examples[i] for i in indices], pad_token_id, device)
            loss_sum, token_count = token_loss(batch)
            total_loss += loss_sum.item()
            total_tokens += token_count
            computed += batch.computed_tokens or sum(lengths[i] for i in indices)
    return (total_loss / total_tokens if total_tokens else None), computed


def _check_config(config: TrainingConfig) -> None:
    for name in ("epochs", "batch_size", "max_seq_len", "lora_r"):
        if getattr(config, name) < 1:
            raise ProviderError(f"{name} must be at least 1, not {getattr(config, name)}")
    if config.eval_every_steps is not None and config.eval_every_steps < 1:
        raise ProviderError(
            f"eval_every_steps must be at least 1 when set, not {config.eval_every_steps}"
        )
    if config.max_steps is not None and config.max_steps < 1:
        raise ProviderError(f"max_steps must be at least 1 when set, not {config.max_steps}")
    if config.checkpoint_every_steps is not None and config.checkpoint_every_steps < 0:
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
    if config.validation_metric not in VALIDATION_METRICS:
        raise ProviderError(
            f"validation_metric must be one of {', '.join(VALIDATION_METRICS)}, "
            f"not {config.validation_metric!r}"
        )
    if config.validation_metric == "label_accuracy" and not config.validation_labels:
        raise ProviderError(
            "validation_metric label_accuracy needs the label set (validation_labels); it is empty"
        )
