"""Run a live session in process, without a network: frames and commands in, events out.

Like pipecat's `run_test`: the same `LiveSession` the server runs, fed from lists instead of a
WebRTC peer, with every event it publishes collected (the JSON a WebSocket client receives).
Each video frame is handed over only after the previous one was analysed, so runs are
deterministic and as fast as the machine allows; commands are applied before a given frame.
Receive times are synthetic (start + media time), so audio and video line up as in a call.

    events, _ = asyncio.run(run_session(stages, video=frames, commands={10: {"type": "reset"}}))
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from stream.analysis.stages import StageSource
from stream.core.types import U8, VideoFrame
from stream.live.protocol import parse_command
from stream.live.session import LiveSession, Subscriber
from stream.live.source import ReceivedAudio, ReceivedVideo


class Collector:
    """A subscriber's other end: every message, decoded; counts analysed frames per track."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.frames: dict[str, int] = {}
        self.changed = asyncio.Condition()

    async def send(self, message: str) -> None:
        event = json.loads(message)
        self.events.append(event)
        if event["type"] == "frame":
            self.frames[event["track"]] = self.frames.get(event["track"], 0) + 1
            async with self.changed:
                self.changed.notify_all()

    async def wait_frames(self, track: str, n: int, session: LiveSession) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.frames.get(track, 0) >= n or session.closed)


class _AudioFeed:
    """Audio frames released up to a media time, as a receiving transport would see them."""

    def __init__(self, frames: Sequence[Any], start: float) -> None:
        self.frames = list(frames)
        self.start = start
        self.t = 0.0  # media time of the next frame
        self.i = 0
        self.until = 0.0
        self.more = asyncio.Condition()

    async def release(self, until: float) -> None:
        async with self.more:
            self.until = until
            self.more.notify_all()

    async def source(self) -> AsyncIterator[ReceivedAudio]:
        while self.i < len(self.frames):
            async with self.more:
                await self.more.wait_for(lambda: self.t <= self.until)
            frame = self.frames[self.i]
            self.i += 1
            self.t += frame.samples / frame.sample_rate
            yield ReceivedAudio(frame, self.start + self.t)


async def run_session(
    stages: StageSource,
    video: Sequence[VideoFrame] | Mapping[str, Sequence[VideoFrame]] = (),
    audio: Mapping[str, Sequence[Any]] | None = None,
    commands: Mapping[int, Sequence[dict[str, Any]] | dict[str, Any]] | None = None,
    viewers: int = 0,
    viewer_limit: int = 256,
    purpose: str = "test",
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """Play frames (and audio) through a live session and collect what it publishes.

    Args:
        stages: loaded models or fakes (`stages.config` configures the session).
        video: frames of one track ("video"), or frames per track id; `frame.t` is media time.
        audio: PyAV audio frames per speaker track id, released in step with the video.
        commands: publisher messages (validated like the server's) applied before the frame
            with that index of the first track; an index past the end applies at the end.
        viewers: number of read-only subscribers to attach as well.
        viewer_limit: their queue size (small values simulate slow viewers).
        purpose: the purpose declared with consent.

    Returns:
        The publisher's events, and each viewer's.
    """
    tracks = dict(video) if isinstance(video, Mapping) else ({"video": video} if video else {})
    pending = {
        i: [parse_command(json.dumps(m)) for m in _as_list(c)] for i, c in (commands or {}).items()
    }
    start = time.perf_counter()
    with (
        ThreadPoolExecutor(1, thread_name_prefix="infer") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="voice") as voice_pool,
    ):
        session = LiveSession(
            stages.config, stages, pool, purpose, voice_pool, pace=False, via="test"
        )
        publisher = Collector()
        session.subscribe(Subscriber(publisher.send, "publisher"))
        watchers = [Collector() for _ in range(viewers)]
        for w in watchers:
            session.subscribe(Subscriber(w.send, "viewer", limit=viewer_limit))
        feeds = {name: _AudioFeed(frames, start) for name, frames in (audio or {}).items()}
        audio_tasks = [session.add_audio(name, f.source()) for name, f in feeds.items()]
        first = next(iter(tracks), None)

        async def source(name: str, frames: Sequence[VideoFrame]) -> AsyncIterator[ReceivedVideo]:
            for i, frame in enumerate(frames):
                if name == first:
                    for msg in pending.pop(i, []):
                        await session.command(msg)
                    for f in feeds.values():
                        await f.release(frame.t)
                image = _const(frame.image)
                yield ReceivedVideo(frame.t, start + frame.t, image, time.perf_counter())
                await publisher.wait_frames(name, i + 1, session)

        for name, frames in tracks.items():
            session.add_video(name, source(name, frames))
        for name, frames in tracks.items():
            await publisher.wait_frames(name, len(frames), session)
        for f in feeds.values():
            await f.release(float("inf"))
        await asyncio.gather(*audio_tasks, return_exceptions=True)
        for msgs in pending.values():
            for msg in msgs:
                await session.command(msg)
        await session.close("test finished")
        for sub in list(session.subscribers):
            await sub.flush()
    return publisher.events, [w.events for w in watchers]


def _const(image: U8) -> Callable[[], U8]:
    image = np.ascontiguousarray(image)
    return lambda: image


def _as_list(c: Sequence[dict[str, Any]] | dict[str, Any]) -> list[dict[str, Any]]:
    return [c] if isinstance(c, dict) else list(c)
