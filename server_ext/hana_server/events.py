"""State events: the scheduler publishes, the panel, the Lab sidebar and `/api/hana/events` read.

State snapshots are coalesced: many changes in one loop iteration give one `state` event, and a
subscriber that falls behind only ever misses intermediate snapshots, never the latest one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

Event = dict[str, Any]


class _Subscriber:
    def __init__(self) -> None:
        self.events: deque[Event] = deque(maxlen=256)
        self.wakeup = asyncio.Event()

    def push(self, event: Event) -> None:
        if event.get("event") == "state":
            # Only the newest snapshot matters; drop an unread older one.
            for old in [e for e in self.events if e.get("event") == "state"]:
                self.events.remove(old)
        self.events.append(event)
        self.wakeup.set()


class EventBus:
    """Fan-out of scheduler events to any number of async subscribers."""

    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._snapshot: Callable[[], Event] | None = None
        self._pending = False
        self._closed = False
        self.sequence = 0

    def publish(self, event: Event) -> None:
        self.sequence += 1
        event = {**event, "seq": self.sequence, "time": time.time()}
        for listener in self._listeners:
            listener(event)
        for subscriber in self._subscribers:
            subscriber.push(event)

    def listen(self, listener: Callable[[Event], None]) -> None:
        """Call `listener(event)` synchronously for every published event (metrics); it must be
        quick and must not raise. State snapshots only go to subscribers."""
        self._listeners.append(listener)

    def publish_state(self, snapshot: Callable[[], Event]) -> None:
        """Publish `snapshot()` once at the end of this loop iteration."""
        self._snapshot = snapshot
        if self._pending or self._closed:
            return
        self._pending = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._pending = False
        if self._snapshot is not None and self._subscribers:
            self.publish({"event": "state", **self._snapshot()})

    def state(self) -> Event:
        return {"event": "state", **(self._snapshot() if self._snapshot else {})}

    async def subscribe(self) -> AsyncIterator[Event]:
        """Yield the current state, then every event until the bus closes."""
        subscriber = _Subscriber()
        self._subscribers.add(subscriber)
        try:
            yield {**self.state(), "seq": self.sequence, "time": time.time()}
            while not self._closed:
                await subscriber.wakeup.wait()
                subscriber.wakeup.clear()
                while subscriber.events:
                    yield subscriber.events.popleft()
        finally:
            self._subscribers.discard(subscriber)

    def close(self) -> None:
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.wakeup.set()
