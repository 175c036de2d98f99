"""The worker's local table store across rebalances (faust's real stores, no broker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from faust.types import TP

from config.settings import get_settings
from processors.app import Wiring, create_app

PARTITIONS = 6


@dataclass
class _Message:
    partition: int


@dataclass
class _Event:
    """What the table's store looks at in faust's current event: its message's partition."""

    message: _Message


def stored(wiring: Wiring, store_kind: str, partition: int, key: bytes) -> bool:
    store = wiring.table.data
    if store_kind == "rocksdb":
        return store._db_for_partition(partition).get(key) is not None  # type: ignore[attr-defined]
    return key in store.data  # type: ignore[attr-defined]


@pytest.mark.parametrize("store_kind", ["rocksdb", "memory"])
async def test_a_lost_partition_is_cleared_so_it_comes_back_from_the_changelog_alone(
    tmp_path: Path, store_kind: str
) -> None:
    settings = get_settings().model_copy(
        update={"worker_store": store_kind, "worker_data_dir": tmp_path, "topic_prefix": "t."}
    )
    _app, wiring = create_app(settings)
    store = wiring.table.data
    changelog = wiring.changelog_topic

    def tps(*partitions: int) -> set[TP]:
        return {TP(changelog, p) for p in partitions}

    await store.on_rebalance(tps(*range(PARTITIONS)), set(), tps(*range(PARTITIONS)), 1)
    keys: dict[int, bytes] = {}
    n = 0
    while len(keys) < PARTITIONS:
        key = f"acme/c{n}".encode()
        n += 1
        keys.setdefault(wiring.partition_for(key, PARTITIONS), key)
    wiring.store_states({partition: [(key, b"state")] for partition, key in keys.items()})
    for partition, key in keys.items():  # as the worker reads a courier back (see ``stored``)
        assert wiring.stored(key, _Event(_Message(partition))) == b"state"
        assert stored(wiring, store_kind, partition, key)

    # 0 and 3 go to another worker, whose producer aborts this worker's open transaction
    await store.on_rebalance(tps(1, 2, 4, 5), tps(0, 3), set(), 2)
    assert not stored(wiring, store_kind, 0, keys[0])
    assert not stored(wiring, store_kind, 3, keys[3])
    assert all(stored(wiring, store_kind, p, keys[p]) for p in (1, 2, 4, 5))
    # 0 comes back: nothing of this worker's is left for the changelog's recovery to miss
    await store.on_rebalance(tps(0, 1, 2, 4, 5), set(), tps(0), 3)
    assert not stored(wiring, store_kind, 0, keys[0])
    assert stored(wiring, store_kind, 1, keys[1])
