"""ftportal.collector: objects frozen for the length of a busy loop, and collectable after."""

from __future__ import annotations

import gc
import importlib
import sys
import threading
import uuid
import weakref
from pathlib import Path

import pytest

from ftportal.collector import existing_objects_frozen, long_lived_objects_frozen


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A reference cycle that only the cyclic collector can free, watched through a weakref."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


@pytest.fixture(autouse=True)
def nothing_frozen_before() -> None:
    gc.collect()
    assert gc.get_freeze_count() == 0


def test_garbage_that_existed_before_waits_until_the_end_and_is_then_freed() -> None:
    watched = cycle()  # already garbage, but only a collection can tell

    with existing_objects_frozen():
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert watched() is not None  # frozen: out of the collector's reach

    assert gc.get_freeze_count() == 0
    gc.collect()
    assert watched() is None


def test_garbage_made_within_is_collected_within() -> None:
    with existing_objects_frozen():
        watched = cycle()
        gc.collect()
        assert watched() is None


def test_the_objects_are_unfrozen_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), existing_objects_frozen():
        raise RuntimeError("the loop failed")

    assert gc.get_freeze_count() == 0


class HeldElsewhere:
    """Objects another thread of the process holds when the freeze happens and lets go of
    inside the block, as a live server's or a browser driver's threads do all the time: the
    freeze took them along, so the freeze count falls when they are freed."""

    def __init__(self) -> None:
        self.holding, self.release, self.released = (threading.Event() for _ in range(3))
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        held = [[n] for n in range(100)]
        self.holding.set()
        self.release.wait(timeout=10)
        del held
        self.released.set()

    def __enter__(self) -> HeldElsewhere:
        self.thread.start()
        assert self.holding.wait(timeout=10)
        return self

    def let_go(self) -> None:
        self.release.set()
        assert self.released.wait(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(timeout=10)


@pytest.mark.parametrize("other_threads_free_objects", [False, True])
def test_someone_elses_freeze_is_left_alone(other_threads_free_objects: bool) -> None:
    """Neither unfrozen nor frozen again, told apart by what the collector can reach rather
    than by the freeze count, which other threads change by freeing frozen objects."""
    with HeldElsewhere() as elsewhere:
        before = cycle()
        gc.freeze()  # someone else's, e.g. a server's before it forks its workers
        try:
            with existing_objects_frozen():
                within = cycle()
                if other_threads_free_objects:
                    elsewhere.let_go()
            gc.collect()
            assert before() is not None  # still frozen: the block did not unfreeze
            assert within() is None  # the block froze nothing of its own
        finally:
            gc.unfreeze()
    gc.collect()
    assert before() is None


# --- a server's life ------------------------------------------------------------------------


def a_module_imported(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Import a module of its own (as a first request importing an SDK would), and forget it
    afterwards."""
    name = f"collector_probe_{uuid.uuid4().hex}"
    (directory / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.delitem(sys.modules, name, raising=False)  # removed again at the end
    importlib.import_module(name)


def test_what_survives_a_full_collection_after_an_import_is_frozen_and_freed_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with long_lived_objects_frozen():
        assert gc.get_freeze_count() > 0
        survivor = cycle()
        kept = survivor()  # held: it survives the next full collection
        dropped = cycle()  # garbage made within: still collected
        a_module_imported(tmp_path, monkeypatch)
        gc.collect()
        assert dropped() is None
        del kept
        gc.collect()
        assert survivor() is not None  # frozen when it survived: out of the collector's reach

    assert gc.get_freeze_count() == 0
    assert not [hook for hook in gc.callbacks if hook.__module__ == "ftportal.collector"]
    gc.collect()
    assert survivor() is None  # collectable again once the server's life ended


def test_what_survives_a_full_collection_without_an_import_stays_collectable() -> None:
    """What is alive at a full collection with no import since the last freeze is mostly the
    requests in flight: frozen, their cycles would never be freed while the server lives."""
    with long_lived_objects_frozen():
        frozen_before = gc.get_freeze_count()
        in_flight = cycle()
        held = in_flight()
        gc.collect()
        # Nothing new frozen: a freeze here would add the survivors, the held cycle among them.
        # The count may fall (by 4 once in the full suite): a frozen object whose last reference
        # goes is freed by reference counting all the same.
        assert gc.get_freeze_count() <= frozen_before
        del held
        gc.collect()
        assert in_flight() is None  # its cycle freed within the server's life


def test_a_servers_life_begins_with_a_collection_so_its_start_up_garbage_is_not_kept() -> None:
    start_up_garbage = cycle()
    with long_lived_objects_frozen():
        assert start_up_garbage() is None


def test_a_servers_life_that_ends_in_an_error_unfreezes_too() -> None:
    with pytest.raises(RuntimeError), long_lived_objects_frozen():
        raise RuntimeError("the server failed")

    assert gc.get_freeze_count() == 0
    assert not [hook for hook in gc.callbacks if hook.__module__ == "ftportal.collector"]
