"""ftportal.collector: objects frozen for the length of a busy loop, and collectable after."""

from __future__ import annotations

import gc
import weakref

import pytest

from ftportal.collector import existing_objects_frozen


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


def test_someone_elses_freeze_is_left_alone() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with existing_objects_frozen():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
