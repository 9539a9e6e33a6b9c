"""Reads for training: loss curves as plain data for the job page and the API."""

from __future__ import annotations

from dataclasses import dataclass

from .models import TrainingJob

CHART_WIDTH = 640
CHART_HEIGHT = 220
CHART_PADDING = 30


@dataclass(frozen=True)
class LossChart:
    train_points: str
    val_points: str
    max_loss: float
    max_step: int
    latest_train: float | None
    latest_val: float | None

    @property
    def is_empty(self) -> bool:
        return not self.train_points and not self.val_points


def _polyline(points: list[tuple[int, float]], max_step: int, max_loss: float) -> str:
    """SVG polyline coordinates; y grows downward, so higher loss sits higher on the chart."""
    inner_w = CHART_WIDTH - 2 * CHART_PADDING
    inner_h = CHART_HEIGHT - 2 * CHART_PADDING
    coords = []
    for step, loss in points:
        x = CHART_PADDING + inner_w * step / max(max_step, 1)
        y = CHART_PADDING + inner_h * (1 - loss / max_loss if max_loss else 1)
        coords.append(f"{x:.1f},{y:.1f}")
    return " ".join(coords)


def loss_chart(job: TrainingJob) -> LossChart:
    rows = list(job.metrics.values_list("step", "train_loss", "val_loss"))
    train = [(step, t) for step, t, _ in rows if t is not None]
    val = [(step, v) for step, _, v in rows if v is not None]
    losses = [loss for _, loss in train + val]
    max_loss = max(losses) if losses else 0.0
    max_step = max(job.total_steps, max((s for s, _, _ in rows), default=0))
    return LossChart(
        train_points=_polyline(train, max_step, max_loss),
        val_points=_polyline(val, max_step, max_loss),
        max_loss=max_loss,
        max_step=max_step,
        latest_train=train[-1][1] if train else None,
        latest_val=val[-1][1] if val else None,
    )
