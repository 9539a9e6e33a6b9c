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
import sys
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


class _FreezeAfterImports:
    """A collector callback that freezes what survived a full collection when modules were
    imported since the last freeze.

    An import is what brings objects that live as long as the process (a module's functions,
    classes and caches). What a full collection finds alive otherwise is mostly the requests in
    flight; frozen, the cycles among those would never be freed.
    """

    def __init__(self) -> None:
        self.modules_at_freeze = len(sys.modules)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        imported = len(sys.modules) != self.modules_at_freeze
        if phase == "stop" and info["generation"] == 2 and imported:
            gc.freeze()
            self.modules_at_freeze = len(sys.modules)


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Within it (a server's life, from its startup to its shutdown), the objects that exist
    at its start are frozen, and so are those that survive a full collection after modules
    were imported; at its end all are collectable again.

    The gateway's process (``config.asgi``) holds some 300,000 tracked objects once the modules
    its requests use are imported; each full collection walked them all, 80 to 150 ms in which
    no request was answered (bench/gateway.py's p99). Frozen, a full collection walks only what
    came since: the requests in flight, about a millisecond. Objects frozen are still freed by
    their reference counts; only cycles among them wait for the end. The server imports what
    its requests use before it starts (``config.asgi``); what a rare path imports later is
    frozen after the next full collection. Where something else has frozen objects already,
    that is left alone and this does nothing.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()  # the garbage of the start-up, not frozen with what lives on
    gc.freeze()
    freeze_after_imports = _FreezeAfterImports()
    gc.callbacks.append(freeze_after_imports)
    try:
        yield
    finally:
        gc.callbacks.remove(freeze_after_imports)
        gc.unfreeze()
