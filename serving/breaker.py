"""Circuit breakers of the gateway's primary backends, one per backend, kept in this process.

A breaker is closed while its backend answers. After ``failures_to_open`` failures in a row
(errors or timeouts) it opens: for ``cooldown_seconds`` no request asks the backend (they go
straight to the fallback, without waiting for a timeout). Then it is half open: exactly one
request, the trial, asks the backend again, while the others keep going to the fallback; the
trial's success closes the breaker, its failure opens it for another cool-down.

Why per process and not in Redis: the breaker exists so that a request does not wait for a
backend that is failing; asking Redis first would add a round trip to every request's path
(the gateway's overhead budget is a few milliseconds) and a failure mode of its own. Each
gateway process learns a backend's failure from its own requests, so with W processes at most
W x ``failures_to_open`` requests pay the timeout before every breaker is open, which is the
same bound LiteLLM's router accepts with its in-memory cooldowns. The thresholds come from the
alias's route at each call, so an edited route applies from the next request on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum

logger = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class _Breaker:
    failures_in_a_row: int = 0
    # While open: when the cool-down ends (time.monotonic()); None while closed.
    open_until: float | None = None
    # While half open: a trial request is asking the backend.
    trial_in_flight: bool = False


@dataclass(frozen=True)
class Admission:
    """Whether a request may ask the primary backend; ``trial`` marks the half-open trial."""

    ask_primary: bool
    trial: bool = False
    # Why it may not (for the log): the failures that opened the breaker.
    failures_in_a_row: int = 0


class CircuitBreakers:
    """The breakers of one process, by backend key. Thread-safe: the gateway's threads share
    them. ``clock`` is ``time.monotonic`` (tests may pass another)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[Hashable, _Breaker] = {}

    def admit(self, key: Hashable) -> Admission:
        """May this request ask ``key``'s backend? Closed: yes. Open during the cool-down: no.
        Open after it: yes for the first request (the trial), no for the rest until it ends."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None or breaker.open_until is None:
                return Admission(ask_primary=True)
            if self._clock() < breaker.open_until or breaker.trial_in_flight:
                return Admission(ask_primary=False, failures_in_a_row=breaker.failures_in_a_row)
            breaker.trial_in_flight = True
            return Admission(ask_primary=True, trial=True)

    def succeeded(self, key: Hashable) -> None:
        """The backend answered: the breaker is closed, its count starts again."""
        with self._lock:
            breaker = self._breakers.pop(key, None)
        if breaker is not None and breaker.open_until is not None:
            logger.warning("gateway: circuit of %s closed: its trial request was answered", key)

    def failed(self, key: Hashable, *, failures_to_open: int, cooldown_seconds: float) -> None:
        """The backend failed or timed out: counted; the breaker opens at ``failures_to_open``
        in a row, and a failed trial opens it again at once."""
        with self._lock:
            breaker = self._breakers.setdefault(key, _Breaker())
            breaker.failures_in_a_row += 1
            was_trial = breaker.trial_in_flight
            breaker.trial_in_flight = False
            opens = was_trial or breaker.failures_in_a_row >= failures_to_open
            if opens:
                breaker.open_until = self._clock() + cooldown_seconds
            failures = breaker.failures_in_a_row
        if opens:
            logger.warning(
                "gateway: circuit of %s open for %gs after %d failures in a row",
                key,
                cooldown_seconds,
                failures,
            )

    def abandoned(self, key: Hashable, admission: Admission) -> None:
        """A trial that ended neither way (the request itself failed before it asked): the
        next request may try."""
        if not admission.trial:
            return
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is not None:
                breaker.trial_in_flight = False

    def state(self, key: Hashable) -> BreakerState:
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None or breaker.open_until is None:
                return BreakerState.CLOSED
            if self._clock() < breaker.open_until:
                return BreakerState.OPEN
            return BreakerState.HALF_OPEN

    def reset(self) -> None:
        """Forget every breaker (tests; an operator's reload)."""
        with self._lock:
            self._breakers.clear()


# The gateway process's breakers.
breakers = CircuitBreakers()
