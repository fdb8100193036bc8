"""A one-slot mailbox: the newest item replaces an unread older one (which counts as dropped)."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestMailbox(Generic[T]):
    """Holds at most one item; `put` never blocks and never queues.

    The consumer always gets the newest item, so a slow consumer adds no latency: frames it
    could not take in time are dropped and counted.
    """

    def __init__(self) -> None:
        self._item: T | None = None
        self._event = asyncio.Event()
        self.received = 0
        self.dropped = 0
        self._closed = False

    def put(self, item: T) -> None:
        """Store the item, replacing (and dropping) any unread one."""
        if self._item is not None:
            self.dropped += 1
        self._item = item
        self.received += 1
        self._event.set()

    async def get(self) -> T:
        """Wait for and take the newest item.

        Raises:
            EOFError: the mailbox was closed and is empty.
        """
        while self._item is None:
            if self._closed:
                raise EOFError("mailbox closed")
            self._event.clear()
            await self._event.wait()
        item, self._item = self._item, None
        return item

    def newest(self, item: T) -> T:
        """`item`, or a newer unread item in its place (`item` then counts as dropped)."""
        if self._item is None:
            return item
        newer, self._item = self._item, None
        self.dropped += 1
        return newer

    def close(self) -> None:
        """Wake the consumer; `get` raises EOFError once the last item is taken."""
        self._closed = True
        self._event.set()
