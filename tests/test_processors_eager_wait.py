"""faust's delivery wait with the first coroutine started at once (processors/eager_wait.py):
the same answers as mode's ``wait_first``, and no task when the delivery completes at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from mode import Service

from processors import eager_wait
from processors.eager_wait import eager_wait_first


class Waiter(Service):
    """A bare mode service: what faust's consumer is to ``wait_first``."""


@pytest.fixture
async def created_tasks() -> AsyncIterator[list[Any]]:
    """The coroutines of every task created on the running loop while the test runs."""
    loop = asyncio.get_running_loop()
    made: list[Any] = []
    factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        made.append(coro)
        if factory is not None:
            return factory(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    yield made
    loop.set_task_factory(factory)


async def test_a_delivery_that_completes_at_once_makes_no_task(created_tasks: list[Any]) -> None:
    async def deliver() -> str:
        return "delivered"

    suspend = asyncio.Event()
    waiting = suspend.wait()
    first = deliver()
    before = len(created_tasks)
    results = await eager_wait_first(Waiter(), first, waiting)
    made = created_tasks[before:]
    assert results.done == [first]
    assert results.results == ["delivered"]
    assert results.stopped is False
    assert made == []
    assert waiting.cr_frame is None  # closed, never left pending


async def test_a_delivery_that_waits_finishes_through_wait_first() -> None:
    space = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def deliver() -> int:
        steps.append("first step")
        await asyncio.sleep(0)  # a bare yield to the loop
        value: int = await space
        steps.append("resumed")
        return value + 1

    asyncio.get_running_loop().call_later(0.01, space.set_result, 41)
    results = await eager_wait_first(Waiter(), deliver(), asyncio.Event())
    assert results.results == [42]
    assert results.stopped is False
    assert steps == ["first step", "resumed"]


async def test_a_waiting_delivery_gives_way_to_a_suspended_flow() -> None:
    outcome: list[str] = []

    async def deliver() -> None:
        try:
            await asyncio.get_running_loop().create_future()  # a full buffer, for ever
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    suspend = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, suspend.set)
    results = await eager_wait_first(Waiter(), deliver(), suspend)
    assert results.done == [suspend]
    await asyncio.sleep(0.01)
    assert outcome == ["cancelled"]


async def test_a_delivery_that_fails_at_once_raises() -> None:
    async def deliver() -> None:
        raise LookupError("no channel")

    waiting = asyncio.Event().wait()
    with pytest.raises(LookupError, match="no channel"):
        await eager_wait_first(Waiter(), deliver(), waiting)
    assert waiting.cr_frame is None


async def test_a_stopped_service_answers_as_mode_does() -> None:
    waiter = Waiter()
    waiter._stopped.set()

    async def deliver() -> str:
        return "delivered"

    results = await eager_wait_first(waiter, deliver())
    assert results.stopped is True
    assert results.done == []


def test_install_patches_fausts_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Consumer, "wait_first", Service.wait_first)
    eager_wait.install()
    assert Consumer.wait_first is eager_wait_first
