"""Keeping the cyclic garbage collector off a process's long-lived objects: a worker's during a
busy loop (:func:`existing_objects_frozen`), a server's for its whole life
(:func:`long_lived_objects_frozen`).

A worker process with Django, the SDKs and torch loaded holds some 270,000 objects the
collector tracks. A loop that allocates quickly, such as 50 hosted requests in flight with their
answers scored and stored as they come, triggers full collections, and each one walks all of
those objects while holding the GIL that the request threads need: in bench/hosted_eval.py's
evaluation run of 1,000 items, a full collection took 0.25 to 0.3 s, and the collector 0.35 s
in all. Frozen objects are left out of every collection, so the loop's collections only walk
what the loop itself made: with them frozen, the collector took 0.09 s and made no full pass.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def existing_objects_frozen() -> Iterator[None]:
    """Within it, the collector skips the objects that existed when it began; afterwards they
    are collectable again, so garbage among them is still freed, only later.

    Freezing is process-wide. Where something else has frozen objects already (a server that
    freezes before forking its workers), that is left alone and this does nothing.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _freeze_after_full_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Within it (a server's life, from its startup to its shutdown), the objects that exist
    at its start, and those that survive each full collection after it, are frozen; at its
    end all are collectable again.

    The gateway's process (``config.asgi``) holds some 230,000 tracked objects once its first
    requests have imported what they use; each full collection walked them all, 80 to 150 ms
    in which no request was answered (bench/gateway.py's p99). What survives a full
    collection is the process's modules, classes and caches, which live as long as it does;
    frozen, the next full collections walk only what came since (about 15 ms). Objects frozen
    are still freed by their reference counts; only cycles among them wait for the end.
    Where something else has frozen objects already, that is left alone and this does nothing.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    gc.callbacks.append(_freeze_after_full_collection)
    try:
        yield
    finally:
        gc.callbacks.remove(_freeze_after_full_collection)
        gc.unfreeze()
