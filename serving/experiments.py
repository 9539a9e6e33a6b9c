"""Experiments at request time: which arm answers a request to an alias with a running
experiment, and the shadow arm's mirrored answers, generated off the request path.

- Assignment is sticky per caller: the arm is chosen by a stable hash of (experiment id, the
  request's OpenAI ``user`` field) against the arms' weights, so one user always meets one arm
  for the experiment's life (and a new experiment reshuffles users). A request without a
  ``user`` is assigned on its own, at random by weight: its caller may meet several arms.
- A pinned name (``<project>/<model>@<n>``) never enters an experiment: it asks for one version.
- The shadow arm answers for ``Experiment.shadow_share`` of the requests (drawn per request id),
  in this module's own few threads after the answer is ready; its answer is logged as its own
  request log row (``shadow_of`` the answered request's id) and never returned. When those
  threads are all busy the mirror is skipped (and counted), never queued without bound.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Prefetch

from catalog.models import BaseModel
from providers.base import ChatModel, ChatResult, Conversation, ProviderError
from registry.models import ModelVersion

from .backends import backend_answer, backend_chat_model, base_model_backend_chat
from .model_names import Resolution, pinned_model_name
from .models import ApplicationKey, Experiment, ExperimentArm, ExperimentStatus
from .request_log import new_request_id
from .traffic import ServedRequest, served_request_record

logger = logging.getLogger(__name__)


def _unit(text: str) -> float:
    """A stable draw in [0, 1) from ``text``: the same text gives the same draw in every
    process (Python's own ``hash`` is salted per process)."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def arm_index(*, experiment_id: int, user: str, weights: Sequence[int]) -> int:
    """The position (in ``weights``) of the arm that answers ``user`` in this experiment: a
    stable hash of (experiment, user) against the weights; a random draw by weight when there
    is no user. Each arm gets about its weight's share of users."""
    total = sum(weights)
    if total <= 0:
        raise ValueError("an experiment needs at least one arm with a positive weight")
    draw = _unit(f"experiment:{experiment_id}:user:{user}") if user else random.random()
    point = draw * total
    reached = 0
    for position, weight in enumerate(weights):
        reached += weight
        if point < reached:
            return position
    return len(weights) - 1  # float rounding at the very top end


def mirrored(*, experiment_id: int, request_id: str, share: float) -> bool:
    """Whether this request is mirrored to the shadow arm: drawn from its id, so a share of
    0.25 mirrors about a quarter of the requests, 0 none and 1 every one."""
    return share > 0 and _unit(f"experiment:{experiment_id}:shadow:{request_id}") < share


@dataclass(frozen=True)
class ArmTarget:
    """What an arm serves: a registry version or a catalog base model as it is."""

    arm_id: int
    arm_name: str
    version: ModelVersion | None
    base_model: BaseModel | None

    @property
    def served_name(self) -> str:
        """What the answer names as its ``model``: the version pinned, or the base model's key."""
        if self.version is not None:
            return pinned_model_name(self.version)
        assert self.base_model is not None
        return self.base_model.key


@dataclass(frozen=True)
class Routed:
    """How one request is served: by ``arm`` when an experiment runs on its alias (else by the
    resolved version), and mirrored to ``shadow`` when it drew the shadow share."""

    version: ModelVersion | None
    arm: ArmTarget | None = None
    shadow: ArmTarget | None = None


def _target(arm: ExperimentArm) -> ArmTarget:
    return ArmTarget(
        arm_id=arm.pk, arm_name=arm.name, version=arm.model_version, base_model=arm.base_model
    )


def running_experiment(*, registered_model_id: int, alias: str) -> Experiment | None:
    """The experiment running on an alias, with its arms and what they serve (one query for
    the experiment, one for the arms)."""
    arms = ExperimentArm.objects.select_related(
        "model_version__registered_model__project",
        "model_version__base_model__endpoint",
        "base_model__endpoint",
    ).order_by("position")
    return (
        Experiment.objects.filter(
            registered_model_id=registered_model_id,
            alias=alias,
            status=ExperimentStatus.RUNNING,
        )
        .prefetch_related(Prefetch("arms", queryset=arms))
        .first()
    )


def experiment_route(
    *, resolution: Resolution, experiment: Experiment | None, user: str, request_id: str
) -> Routed:
    """How to serve a request whose model name resolved to ``resolution``: its version, or the
    arm of ``experiment``, the one running on its alias (``serving.plans``; pinned names have
    none)."""
    if experiment is None:
        return Routed(version=resolution.version)
    arms = list(experiment.arms.all())
    answering = [arm for arm in arms if not arm.is_shadow]
    if not answering:  # start refuses this; a guard, not a path
        return Routed(version=resolution.version)
    chosen = answering[
        arm_index(experiment_id=experiment.pk, user=user, weights=[arm.weight for arm in answering])
    ]
    shadow_arm = next((arm for arm in arms if arm.is_shadow), None)
    shadow = None
    if shadow_arm is not None and mirrored(
        experiment_id=experiment.pk, request_id=request_id, share=experiment.shadow_share
    ):
        shadow = _target(shadow_arm)
    return Routed(version=chosen.model_version, arm=_target(chosen), shadow=shadow)


def chat_of(target: ArmTarget) -> ChatModel:
    """The kept backend chat of an arm (``serving.backends``)."""
    if target.version is not None:
        return backend_chat_model(target.version)
    assert target.base_model is not None
    return base_model_backend_chat(target.base_model)


# --- the shadow arm -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowRequest:
    """What the shadow arm is asked: the answered request's messages and settings."""

    primary_request_id: str
    key: ApplicationKey
    requested_model: str
    messages: Conversation
    max_tokens: int
    temperature: float
    caller_user: str
    target: ArmTarget


class _ShadowRunner:
    """A few threads of their own (FTPORTAL_SHADOW_CONCURRENCY), so mirrored requests never
    take the gateway's threads; at most that many run and as many wait, the rest are skipped."""

    def __init__(self, concurrency: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="shadow")
        self._slots = threading.BoundedSemaphore(concurrency * 2)
        self._lock = threading.Lock()
        self.skipped = 0

    def submit(self, shadow: ShadowRequest) -> bool:
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.skipped += 1
                skipped = self.skipped
            logger.warning(
                "experiments: shadow request for %s skipped, the shadow threads are busy "
                "(%d skipped so far)",
                shadow.primary_request_id,
                skipped,
            )
            return False
        future = self._pool.submit(_shadow_run, shadow)
        future.add_done_callback(lambda _: self._slots.release())
        return True


_runner: _ShadowRunner | None = None
_runner_lock = threading.Lock()


def _shadow_runner() -> _ShadowRunner:
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = _ShadowRunner(int(settings.FTPORTAL_SHADOW_CONCURRENCY))
        return _runner


def shadow_submit(shadow: ShadowRequest) -> bool:
    """Mirror an answered request to the shadow arm, off the request path: returns at once;
    False when skipped because the shadow threads are busy."""
    return _shadow_runner().submit(shadow)


def shadow_health() -> dict[str, object]:
    """This process's shadow arm for ``/healthz``: mirrors skipped because its threads were busy
    (read without starting the threads)."""
    return {"skipped": _runner.skipped if _runner is not None else 0}


def _shadow_run(shadow: ShadowRequest) -> None:
    """Ask the shadow arm and log its row; a failure is logged in the row, never raised."""
    started = time.monotonic()
    result: ChatResult | None = None
    error = ""
    try:
        result = backend_answer(
            chat_of(shadow.target),
            shadow.messages,
            max_tokens=shadow.max_tokens,
            temperature=shadow.temperature,
        )
    except ProviderError as failure:
        # The backend's own words stay in the server log: they may name endpoints.
        logger.warning("experiments: the shadow arm %s failed: %s", shadow.target.arm_name, failure)
        error = f"The shadow arm {shadow.target.arm_name} could not answer."
    except Exception:
        logger.exception("experiments: the shadow arm %s failed", shadow.target.arm_name)
        error = f"The shadow arm {shadow.target.arm_name} failed unexpectedly."
    try:
        served_request_record(
            served=ServedRequest(
                request_id=new_request_id(),
                key=shadow.key,
                project=shadow.key.project,
                requested_model=shadow.requested_model,
                served_version=shadow.target.version,
                served_base_model=shadow.target.base_model,
                messages=shadow.messages,
                output=result.text if result else "",
                status_code=200 if result else 502,
                error=error,
                latency_seconds=time.monotonic() - started,
                prompt_tokens=result.prompt_tokens if result else 0,
                completion_tokens=result.completion_tokens if result else 0,
                caller_user=shadow.caller_user,
                stream=False,
                arm_id=shadow.target.arm_id,
                arm_name=shadow.target.arm_name,
                shadow_of=shadow.primary_request_id,
            )
        )
    finally:
        close_old_connections()
