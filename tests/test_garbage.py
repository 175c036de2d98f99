"""The stream processes' garbage collector set-up (pure, no I/O)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from geostream.garbage import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_gc_freezes_what_exists_and_collects_rarely(restored_gc: None) -> None:
    before: list[list[int]] = [[1]]
    assert any(o is before for o in gc.get_objects())
    tune_gc()
    assert gc.get_threshold() == (100_000, 50, 100)
    assert gc.get_freeze_count() > 1_000  # the imported modules' objects, at least
    # frozen: in no generation a collection walks
    assert not any(o is before for o in gc.get_objects())
