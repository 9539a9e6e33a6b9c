"""Run calls at the same instant from real threads, as two people (or one double click) would."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def at_once(calls: list[Callable[[], T]], *, timeout: float = 60) -> list[T]:
    """Start every call together (a barrier releases them at once) and return what each returned,
    in the order they finished. An exception in a call fails the test after all have finished."""
    start = threading.Barrier(len(calls))
    results: list[T] = []
    errors: list[BaseException] = []

    def run(call: Callable[[], T]) -> None:
        from django.db import connection

        try:
            start.wait(timeout=10)
            results.append(call())
        except BaseException as error:  # re-raised in the test's thread below
            errors.append(error)
        finally:
            connection.close()  # each thread has its own connection to the database

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    if errors:
        raise errors[0]
    assert len(results) == len(calls), "a call did not finish in time"
    return results
