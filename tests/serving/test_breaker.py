"""The circuit breaker's states on a clock the test moves: closed until N failures in a row,
open for the cool-down, then one trial at a time whose outcome closes or reopens it."""

from __future__ import annotations

from serving.breaker import BreakerState, CircuitBreakers

KEY = ("version", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fail(breakers: CircuitBreakers, times: int = 1) -> None:
    for _ in range(times):
        breakers.failed(KEY, failures_to_open=3, cooldown_seconds=10)


def test_it_opens_only_after_n_failures_in_a_row() -> None:
    breakers = CircuitBreakers(Clock())
    fail(breakers, 2)
    breakers.succeeded(KEY)  # a success starts the count again
    fail(breakers, 2)
    assert breakers.admit(KEY).ask_primary
    assert breakers.state(KEY) == BreakerState.CLOSED

    fail(breakers)

    assert breakers.state(KEY) == BreakerState.OPEN
    refused = breakers.admit(KEY)
    assert not refused.ask_primary and refused.failures_in_a_row == 3
    assert breakers.admit(("version", 2)).ask_primary  # one breaker per backend


def test_after_the_cooldown_one_trial_at_a_time_decides() -> None:
    clock = Clock()
    breakers = CircuitBreakers(clock)
    fail(breakers, 3)
    clock.now += 9.9
    assert not breakers.admit(KEY).ask_primary
    clock.now += 0.2

    trial = breakers.admit(KEY)
    assert trial.ask_primary and trial.trial
    assert not breakers.admit(KEY).ask_primary  # others keep going to the fallback
    fail(breakers)  # the trial failed: open again for a whole cool-down
    assert breakers.state(KEY) == BreakerState.OPEN
    clock.now += 5
    assert not breakers.admit(KEY).ask_primary
    clock.now += 5.1

    second = breakers.admit(KEY)
    assert second.trial
    breakers.succeeded(KEY)
    assert breakers.state(KEY) == BreakerState.CLOSED
    assert breakers.admit(KEY).ask_primary and breakers.admit(KEY).ask_primary


def test_an_abandoned_trial_lets_the_next_request_try() -> None:
    clock = Clock()
    breakers = CircuitBreakers(clock)
    fail(breakers, 3)
    clock.now += 11
    trial = breakers.admit(KEY)

    breakers.abandoned(KEY, trial)

    assert breakers.admit(KEY).trial
