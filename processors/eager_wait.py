"""faust's per-message delivery without a task per message.

faust's fetcher hands every message to the streams with
``await consumer.wait_first(callback(message), consumer.suspend_flow.wait())`` so that a
delivery blocked on a full stream buffer gives way when a rebalance suspends the flow. mode's
``wait_first`` wraps each awaitable in a task (four of them, with the service's stopped and
crashed events) and waits for the first: about 29 µs per message, a quarter of what the worker
spends per upload of 10 fixes, although a delivery nearly always completes at once.

:func:`eager_wait_first` runs the first awaitable's first step at once, as Python 3.12's eager
tasks do. If that completes it, the answer is the one ``wait_first`` gives when its first
awaitable is done before anything else: that awaitable won, nothing stopped. Otherwise the
started coroutine goes on through the original ``wait_first`` exactly as before (the steps
it has left are driven by the task ``wait_first`` makes, cancellation included).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from mode import Service
from mode.services import WaitResults

_original_wait_first = Service.wait_first


class _Started:
    """A coroutine that already ran its first step (which yielded ``pending``), awaitable
    again: a task awaiting this resumes the coroutine where it stopped."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like: the coroutine decides
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def _close(awaitables: tuple[Any, ...]) -> None:
    for other in awaitables:
        if asyncio.iscoroutine(other):
            other.close()  # never started: closing it spares the "never awaited" warning


async def eager_wait_first(
    self: Service,
    *coros: Any,
    timeout: Any = None,  # noqa: ASYNC109 (mode's signature)
) -> WaitResults:
    """``Service.wait_first``, with the first awaitable started at once when it is a
    coroutine (see the module)."""
    first = coros[0] if coros else None
    if not asyncio.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
        return await _original_wait_first(self, *coros, timeout=timeout)
    try:
        pending = first.send(None)
    except StopIteration as done:
        _close(coros[1:])
        return WaitResults([first], [done.value], False)
    except BaseException:
        _close(coros[1:])
        raise
    return await _original_wait_first(self, _Started(first, pending), *coros[1:], timeout=timeout)


def install() -> None:
    """Make faust's consumers deliver messages through :func:`eager_wait_first` (patched on
    faust's consumer class, once, for the one faust app of the process)."""
    from faust.transport.consumer import Consumer

    Consumer.wait_first = eager_wait_first  # type: ignore[method-assign]
