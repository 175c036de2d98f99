"""Where the worker stands in each source partition, kept apart from faust's bookkeeping.

faust's fetcher can hand records over twice or skip some around a rebalance: it seeks the
consumer back to the committed offsets (twice while a table recovers) but keeps delivering
records fetched before the seek, then drops the re-fetched ones as already read, and its
commit counts the "gaps" it noticed as done. :class:`SourcePositions` is the worker's own
account: a record is processed only when it is the next one of its partition, and the offsets
committed are exactly the records whose outputs are in the transaction. Pure: the worker does
the seeking and the I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from enum import Enum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)  # a partition, however the caller names it


class Admission(Enum):
    """What to do with a delivered record."""

    PROCESS = "process"  # the next record of its partition
    SEEN = "seen"  # processed already (delivered again after a seek back)
    HOLE = "hole"  # records before it went missing: seek back to the position


class SourcePositions(Generic[K]):
    """Per source partition, the next record to process and the next one not yet published.

    The two differ while a batch is processed but its outputs are not yet in the partition's
    transaction: a commit in between must not cover those records (they would be committed
    without their outputs), so commits take the published position.
    """

    def __init__(self) -> None:
        self.next: dict[K, int] = {}
        self.published: dict[K, int] = {}
        #: per partition, the oldest record delivered but left unprocessed (see :meth:`defer`)
        self.deferred: dict[K, int] = {}

    def __contains__(self, tp: K) -> bool:
        return tp in self.next

    def start(self, tp: K, offset: int) -> None:
        """Begin ``tp`` at ``offset`` (the group's committed offset, on assignment)."""
        self.next[tp] = self.published[tp] = offset

    def admit(self, tp: K, offset: int) -> Admission:
        """Whether the record at ``offset`` of ``tp`` is processed now (and count it if so)."""
        position = self.next[tp]
        if offset == position:
            self.next[tp] = position + 1
            return Admission.PROCESS
        return Admission.SEEN if offset < position else Admission.HOLE

    def defer(self, tp: K, offset: int) -> None:
        """The record at ``offset`` of ``tp`` came but is not processed now (a rebalance is
        on, and the table may not hold its courier's state yet): it must be read again."""
        first = self.deferred.get(tp)
        if first is None or offset < first:
            self.deferred[tp] = offset

    def rereads(self, assigned: Collection[K]) -> dict[K, int]:
        """Where to seek back the assigned partitions with deferred records; each is asked
        for once. A started partition goes back to its position; one not started since its
        assignment (every record it got was deferred) to its oldest deferred record, where
        :meth:`admit` then starts it (or finds the hole before it)."""
        seeks = {
            tp: self.next.get(tp, first) for tp, first in self.deferred.items() if tp in assigned
        }
        self.deferred.clear()
        return seeks

    def publish(self, tp: K, offset: int) -> None:
        """The outputs of ``tp``'s record at ``offset`` are in its transaction now."""
        published = self.published.get(tp)
        if published is not None and published <= offset < self.next[tp]:
            self.published[tp] = offset + 1

    def skip_to(self, tp: K, offset: int) -> None:
        """Move ``tp`` forward to ``offset``: the records before it no longer exist."""
        self.next[tp] = max(self.next[tp], offset)
        self.published[tp] = max(self.published[tp], offset)

    def forget(self, tps: Collection[K]) -> None:
        """Drop ``tps``: their outputs were not sent, or the partitions went elsewhere."""
        for tp in tps:
            self.next.pop(tp, None)
            self.published.pop(tp, None)
            self.deferred.pop(tp, None)

    def keep(self, assigned: Collection[K]) -> None:
        """Drop every partition that is not in ``assigned``."""
        self.forget([tp for tp in {*self.next, *self.deferred} if tp not in assigned])

    def committable(
        self, assigned: Collection[K], committed: Mapping[K, int | None]
    ) -> dict[K, int]:
        """Offsets to commit: each assigned partition's published position, where it moved on."""
        out = {}
        for tp, position in self.published.items():
            done = committed.get(tp)
            if tp in assigned and (done is None or position > done):
                out[tp] = position
        return out
