"""Reads for training: loss curves as plain data for the job page."""

from __future__ import annotations

from dataclasses import dataclass

from .models import TrainingJob

CHART_WIDTH = 640
CHART_HEIGHT = 220
CHART_PADDING = 30

Point = tuple[float, float]


@dataclass(frozen=True)
class LossChart:
    train: list[Point]
    val: list[Point]
    low: float
    high: float
    max_step: int
    latest_train: float | None
    latest_val: float | None

    @property
    def is_empty(self) -> bool:
        return not self.train and not self.val

    @property
    def train_points(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.train)

    @property
    def val_points(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.val)


def _scale(
    series: list[tuple[int, float]], max_step: int, low: float, high: float
) -> list[Point]:
    """Chart coordinates; SVG's y grows downward, so higher loss sits higher on the chart."""
    inner_w = CHART_WIDTH - 2 * CHART_PADDING
    inner_h = CHART_HEIGHT - 2 * CHART_PADDING
    span = high - low
    return [
        (
            CHART_PADDING + inner_w * step / max(max_step, 1),
            CHART_PADDING + inner_h * (high - loss) / span,
        )
        for step, loss in series
    ]


def loss_chart(job: TrainingJob) -> LossChart:
    rows = list(job.metrics.values_list("step", "train_loss", "val_loss"))
    train = [(step, t) for step, t, _ in rows if t is not None]
    val = [(step, v) for step, _, v in rows if v is not None]
    losses = [loss for _, loss in train + val]
    # Fit the axis to the losses seen, so that a drop from 2.3 to 2.1 is visible, with a margin
    # so a single point or a flat line does not sit on the frame.
    low, high = (min(losses), max(losses)) if losses else (0.0, 1.0)
    margin = max((high - low) * 0.1, 0.05)
    low, high = max(low - margin, 0.0), high + margin
    max_step = max(job.total_steps, max((s for s, _, _ in rows), default=0))
    return LossChart(
        train=_scale(train, max_step, low, high),
        val=_scale(val, max_step, low, high),
        low=low,
        high=high,
        max_step=max_step,
        latest_train=train[-1][1] if train else None,
        latest_val=val[-1][1] if val else None,
    )
