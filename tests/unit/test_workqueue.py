"""The reconcile work queue: a burst of events for one key costs one reconcile."""

from __future__ import annotations

import asyncio

from edgemodel_operator.workqueue import WorkQueue


def test_duplicates_collapse_and_active_keys_requeue_once() -> None:
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        for _ in range(5):
            queue.add("a")
        queue.add("b")
        assert len(queue) == 2
        key = await queue.get()
        queue.add(key)  # an event while it is being worked on
        queue.add(key)
        assert len(queue) == 1
        queue.done(key)  # ... comes back exactly once
        return [await queue.get(), await queue.get()]

    assert asyncio.run(scenario()) == ["b", "a"]


def test_add_after_keeps_the_earliest_wakeup() -> None:
    async def scenario() -> str:
        queue: WorkQueue[str] = WorkQueue()
        queue.add_after("a", 10)
        queue.add_after("a", 0.01)
        queue.add_after("a", 5)
        return await asyncio.wait_for(queue.get(), timeout=1)

    assert asyncio.run(scenario()) == "a"


def test_forget_cancels_a_pending_wakeup() -> None:
    async def scenario() -> bool:
        queue: WorkQueue[str] = WorkQueue()
        queue.add_after("a", 0.01)
        queue.forget("a")
        try:
            await asyncio.wait_for(queue.get(), timeout=0.1)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(scenario())
