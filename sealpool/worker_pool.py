"""The worker pool of sealpool's Celery workers: Celery's threads pool that wakes the event
loop when a task ends.

With prefetch disabled (see sealpool.app) a worker whose slots are all busy stops reading its
queues, and reads again only when its event loop next looks — which, with the plain threads
pool, is the next timer, up to a second or more later: nothing tells the loop that a thread
became free (the prefork pool's result pipe does). Each finished task therefore schedules a
no-op on the loop, which wakes it at once to take the next message.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from celery.concurrency import thread
from kombu.asynchronous import Hub


class ThreadPool(thread.TaskPool):
    """Threads pool; a slot that frees up is offered to the broker at once."""

    _hub: Hub | None = None

    def register_with_event_loop(self, loop: Hub) -> None:
        self._hub = loop

    def on_apply(self, *args: Any, **kwargs: Any) -> thread.ApplyResult:
        result = super().on_apply(*args, **kwargs)
        result.f.add_done_callback(self._wake_loop)
        return result

    def _wake_loop(self, _done: Future[Any]) -> None:
        if self._hub is not None:
            self._hub.call_soon(_nothing)


def _nothing() -> None:
    """What the woken loop runs: its next turn offers the free slot to the broker."""
