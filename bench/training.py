"""Local LoRA training throughput: our trainer against the Hugging Face Trainer with peft.

    python bench/training.py [--examples N] [--epochs 1] [--repeats N] [--batch-size 8]

Defaults fit about 5 minutes on 2 CPU cores: 40 tickets, 2 repeats. The baseline trains at 50 to
80 tokens/s there, so a few hundred tickets (300 are about 34k tokens) take over 10 minutes a
repeat; pass --examples 300 for that. On a GPU: 1024 tickets, 3 repeats.

Both sides fine-tune the same base model (SmolLM2-135M-Instruct) on the same generated support
tickets with the same hyperparameters: epochs, batch size in examples,
learning rate with linear decay to 0, AdamW (weight decay 0.01), gradient clipping at 1.0, LoRA
r=8 / alpha=16 / dropout 0.05 on q, k, v and o projections. Both see every example once per
epoch, so both run the same number of optimizer steps on the same examples (tokenized by the
same function, labels on assistant replies only).

Ours trains in the precision and attention kernel its probe measured fastest on this host
(providers/local/precision.py; the probe runs once, before the timings). The baseline keeps the
model's default dtype (fp32 on CPU, bf16 on CUDA) and is the Trainer as documented for
supervised fine-tuning: a random order,
DataCollatorForSeq2Seq padding each batch to its longest example, the model's own loss; no
evaluation, no checkpoint saving, no reporting, dataloader defaults.

Tokens are counted the same way on both sides: non-padding input tokens of the examples
trained on. Each side's rate is those tokens over its training loop's seconds (model loading and
tokenization excluded on both sides). Repeats alternate the two sides so that a machine busy
with something else slows both alike; the medians are reported.

MFU (model FLOP utilisation) is each side's model FLOPs per second (providers/local/
utilisation.py) over this host's measured peak rate of a large matrix product in that side's
precision. Ours runs a shared system prompt once a row instead of once an example, so two
figures: `mfu`, the trainer's own, counting the tokens its model ran, and `useful_mfu`,
counting every example's tokens as the baseline's does (it can pass 1 where enough is shared).

The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(REPO))

from bench.prepare import prepared_base_model  # noqa: E402
from providers.base import Conversation, TrainingConfig, TrainingProgress  # noqa: E402
from providers.local.encoding import (  # noqa: E402
    IGNORED_LABEL,
    EncodedExample,
    encode_for_training,
    input_tokens,
)
from providers.local.loading import load_tokenizer, pick_device  # noqa: E402
from providers.local.precision import (  # noqa: E402
    Precision,
    peak_matrix_flops,
    precision_dtype,
)
from providers.local.training import (  # noqa: E402
    MAX_GRAD_NORM,
    WEIGHT_DECAY,
    LocalLoRAFineTuner,
)
from providers.local.utilisation import ModelFlops  # noqa: E402

# The project's Django app "datasets" shadows Hugging Face's optional package of that name,
# which the Trainer probes for on every call; with the repository off the path it finds nothing.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != REPO]

import torch  # noqa: E402

SEED = 0
SYSTEM = (
    'Triage the support ticket. Answer with JSON: {"category": billing, bug, feature or '
    'account, "priority": low, normal or high}.'
)
CATEGORIES = {
    "billing": [
        "I was charged twice for the same month.",
        "The invoice shows the wrong VAT number for our company.",
        "We downgraded last week but were still billed for the business plan.",
        "The card on file expired and the renewal failed.",
        "Can you send a corrected invoice with our new billing address?",
    ],
    "bug": [
        "The app crashes as soon as I open the settings page.",
        "Exporting the board to CSV produces an empty file.",
        "Notifications arrive twice, sometimes three times.",
        "The calendar view shows tasks on the wrong day after the time change.",
        "Dragging a card between columns freezes the browser tab.",
    ],
    "feature": [
        "Could you add a dark mode to the web app?",
        "We would love single sign-on with Okta.",
        "Please let us set recurring tasks that repeat every other week.",
        "An API endpoint for time entries would save us hours.",
        "It would help to filter the board by several labels at once.",
    ],
    "account": [
        "I cannot log in since I changed my email address.",
        "Please transfer ownership of the workspace to my colleague.",
        "How do I enable two-factor authentication for the whole team?",
        "Our former admin left and nobody can manage users now.",
        "I need to delete my personal account but keep the team's data.",
    ],
}
CONTEXT = [
    "We are a team of twelve and use the board every day.",
    "This started after the update on Monday.",
    "I tried another browser and cleared the cache, with no change.",
    "Our finance department needs this sorted before the end of the quarter.",
    "Steps: open the project, choose the list view, then click the export button.",
    "The same happens on the desktop app and on my phone.",
    "Error message: 'Something went wrong (code 502)', request id 7f3a-22c1-9b0e.",
    "I have attached a screenshot of what I see.",
    "We have been customers for three years and this never happened before.",
    "Please get back to me by email, I am travelling this week.",
    "Two other people on my team report the same thing.",
    "Our account id is 48213 and the workspace is called Northwind Ops.",
]
PRIORITIES = ["low", "normal", "high"]


def support_tickets(count: int, seed: int) -> list[Conversation]:
    """Tickets of very different lengths (a line to a long report) with short JSON answers."""
    rng = random.Random(seed)
    tickets: list[Conversation] = []
    for _ in range(count):
        category = rng.choice(list(CATEGORIES))
        # Mostly short tickets, some long ones: the mix that makes padding expensive.
        context_sentences = min(30, int(rng.lognormvariate(0.8, 1.0)))
        body = [rng.choice(CATEGORIES[category])]
        body += [rng.choice(CONTEXT) for _ in range(context_sentences)]
        rng.shuffle(body)
        answer = json.dumps({"category": category, "priority": rng.choice(PRIORITIES)})
        tickets.append(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": " ".join(body)},
                {"role": "assistant", "content": answer},
            ]
        )
    return tickets


@dataclass(frozen=True)
class Measurement:
    tokens: int
    seconds: float
    # Mean over the optimizer steps: not equal across sides (other batches), but close when both
    # train the same task the same way.
    mean_train_loss: float
    # Ours only: the trainer's own utilisation, which counts the tokens its model ran.
    model_flops_utilization: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def train_ours(
    base_dir: Path, conversations: list[Conversation], config: TrainingConfig
) -> Measurement:
    progress: list[TrainingProgress] = []
    with tempfile.TemporaryDirectory() as output_dir:
        result = LocalLoRAFineTuner(base_dir).train(
            train=conversations,
            validation=[],
            config=config,
            output_dir=Path(output_dir),
            on_progress=progress.append,
            should_stop=lambda: False,
        )
    losses = [event.train_loss for event in progress if event.train_loss is not None]
    # tokens_per_second is training tokens over the seconds of the optimizer steps.
    return Measurement(
        result.trained_tokens,
        result.trained_tokens / result.metrics["tokens_per_second"],
        statistics.mean(losses),
        result.model_flops_utilization,
    )


def train_baseline(
    base_dir: Path,
    examples: list[EncodedExample],
    config: TrainingConfig,
    device: str,
) -> Measurement:
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    class LoopTimer(TrainerCallback):
        """Times the training loop alone, as our trainer's rate does."""

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.began = time.perf_counter()

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            self.seconds = time.perf_counter() - self.began

    tokenizer = load_tokenizer(base_dir)
    tokenizer.padding_side = "right"
    torch.manual_seed(config.seed)
    base = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=precision_dtype(baseline_precision(device)), local_files_only=True
    )
    base.config.use_cache = False
    model = get_peft_model(
        base,
        LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    dataset = [
        {
            "input_ids": example.input_ids,
            "attention_mask": [1] * len(example.input_ids),
            "labels": example.labels,
        }
        for example in examples
    ]
    timer = LoopTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir,
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            lr_scheduler_type="linear",  # the default, spelled out: decay to 0, no warm-up
            weight_decay=WEIGHT_DECAY,  # ours uses AdamW's 0.01; the Trainer defaults to 0
            max_grad_norm=MAX_GRAD_NORM,
            seed=config.seed,
            report_to="none",
            eval_strategy="no",
            save_strategy="no",
            disable_tqdm=True,
            use_cpu=device == "cpu",
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=dataset,
            data_collator=DataCollatorForSeq2Seq(
                tokenizer, padding="longest", label_pad_token_id=IGNORED_LABEL
            ),
            callbacks=[timer],
        )
        output = trainer.train()
    return Measurement(input_tokens(examples) * config.epochs, timer.seconds, output.training_loss)


def baseline_precision(device: str) -> Precision:
    """The model's default dtype as the Trainer gets it: bf16 on a GPU, fp32 on a CPU."""
    return "bf16" if device.startswith("cuda") else "fp32"


def training_flops(base_dir: Path, examples: Sequence[EncodedExample], epochs: int) -> float:
    """Model FLOPs of every example's tokens (providers/local/utilisation.py), the same count
    for both sides, so that their useful FLOP/s differ exactly as their tokens/s do."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    # With LoRA on, so that its trainable matrices are not counted as frozen work.
    get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    counted = ModelFlops.of(base)
    predicted = sum(example.supervised_tokens for example in examples)
    return epochs * counted.of_tokens(input_tokens(examples), predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    device = pick_device(None)
    on_gpu = device.startswith("cuda")
    example_count = args.examples or (1024 if on_gpu else 40)
    repeats = args.repeats or (3 if on_gpu else 2)
    base_dir = prepared_base_model()
    config = TrainingConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        checkpoint_every_steps=0,
        eval_every_steps=10**9,
        seed=SEED,
    )
    conversations = support_tickets(example_count, SEED)
    # The probe runs once per worker process before its first job; here, before the timings.
    choice = LocalLoRAFineTuner(base_dir).host_choice(config)
    print(choice.describe(), flush=True)
    tokenizer = load_tokenizer(base_dir)
    examples = [encode_for_training(tokenizer, c, config.max_seq_len) for c in conversations]
    lengths = sorted(len(example.input_ids) for example in examples)
    print(
        f"device={device} examples={len(examples)} tokens={input_tokens(examples)} "
        f"length min/median/max={lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]} "
        f"steps={-(-len(examples) // config.batch_size) * config.epochs}",
        flush=True,
    )

    ours: list[Measurement] = []
    baseline: list[Measurement] = []
    for repeat in range(repeats):
        # Alternate which side goes first, so neither always runs on a warmer machine.
        order = ["ours", "baseline"] if repeat % 2 == 0 else ["baseline", "ours"]
        for side in order:
            if side == "ours":
                ours.append(train_ours(base_dir, conversations, config))
                measured = ours[-1]
            else:
                baseline.append(train_baseline(base_dir, examples, config, device))
                measured = baseline[-1]
            print(
                f"repeat {repeat + 1} {side}: {measured.tokens} tokens in "
                f"{measured.seconds:.1f} s = {measured.tokens_per_second:.1f} tokens/s, "
                f"mean train loss {measured.mean_train_loss:.3f}",
                flush=True,
            )
    if ours[0].tokens != baseline[0].tokens:
        raise SystemExit(
            f"token counts differ: ours {ours[0].tokens}, baseline {baseline[0].tokens}"
        )

    ours_rate = statistics.median(m.tokens_per_second for m in ours)
    baseline_rate = statistics.median(m.tokens_per_second for m in baseline)
    flops = training_flops(base_dir, examples, config.epochs)
    ours_seconds = statistics.median(m.seconds for m in ours)
    baseline_seconds = statistics.median(m.seconds for m in baseline)
    achieved = flops / ours_seconds
    baseline_achieved = flops / baseline_seconds
    peak = choice.peak_flops
    baseline_peak = peak_matrix_flops(baseline_precision(device), device)
    print(
        f"ours_tokens_per_s={ours_rate:.1f} baseline_tokens_per_s={baseline_rate:.1f} "
        f"speedup={ours_rate / baseline_rate:.2f} "
        f"achieved_tflops={achieved / 1e12:.4f} baseline_tflops={baseline_achieved / 1e12:.4f} "
        f"peak_tflops={peak / 1e12:.4f} baseline_peak_tflops={baseline_peak / 1e12:.4f} "
        f"mfu={statistics.median(m.model_flops_utilization or 0.0 for m in ours):.3f} "
        f"useful_mfu={achieved / peak:.3f} baseline_mfu={baseline_achieved / baseline_peak:.3f} "
        f"setup={choice.setup.label} device={device}"
    )


if __name__ == "__main__":
    main()
