"""What a live session's media come from: one contract for every ingest path.

A source (an aiortc peer for the page and WHIP, a URL read by PyAV for `watch`, a Janus room bot
for `join`, lists of frames in tests) puts its tracks into a `TrackSink` (the session) when it
starts, sets `done` when it has ended for good, and stops all its tracks on `close()`. The
session holds at most one source and closes it with its media.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from stream.core.types import U8
from stream.live.events import Event


@dataclass(frozen=True)
class ReceivedVideo:
    """A decoded video frame as a source delivers it.

    Attributes:
        t: media time in seconds on the track's own clock (0 at its first frame).
        received: when it arrived on the receive clock (time.perf_counter() for a network
            source), which lines the track up with audio tracks.
        image: converts it to a BGR uint8 array (run in the inference executor).
        arrived: when it was handed to the session, if not `received` (queue age and latency
            are measured from it; in-process tests replay media on a synthetic receive clock).
    """

    t: float
    received: float
    image: Callable[[], U8]
    arrived: float | None = None

    @property
    def since(self) -> float:
        """The start of queue age and latency."""
        return self.received if self.arrived is None else self.arrived


@dataclass(frozen=True)
class ReceivedAudio:
    """A decoded audio frame (a PyAV `AudioFrame`: any format, layout, rate and size)."""

    frame: Any
    received: float

    @property
    def samples(self) -> int:
        return int(self.frame.samples)

    @property
    def sample_rate(self) -> int:
        return int(self.frame.sample_rate)


class TrackSink(Protocol):
    """Where a source puts its tracks (a `LiveSession`)."""

    def add_video(
        self, track: str, source: AsyncIterator[ReceivedVideo], name: str | None = None
    ) -> None: ...

    def add_audio(self, track: str, source: AsyncIterator[ReceivedAudio]) -> asyncio.Task[Any]: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    def publish(self, event: Event) -> dict[str, Any]: ...


class MediaSource(Protocol):
    """A session's media: tracks in (`start`), `close()`, and `done` once it ended for good."""

    @property
    def done(self) -> asyncio.Event: ...

    async def start(self, sink: TrackSink) -> None:
        """Open the media and add its tracks to `sink` (errors propagate: nothing was added)."""
        ...

    async def close(self) -> None:
        """Stop every track (they end; the session's tasks for them finish)."""
        ...
