"""`emotion-stream watch URL`: a stream URL or device as a live session's source, through PyAV.

Anything FFmpeg opens works: RTSP cameras (rtsp://), RTMP pulls and pushes (rtmp://; with
`listen` the URL is a local address that OBS or ffmpeg publishes to), SRT (srt://), HLS
(https://.../index.m3u8), HTTP streams (MPEG-TS, FLV, ...), local devices (/dev/video0 with
format v4l2) and files. Demuxing and decoding run in one thread per source; frames reach the
session like WebRTC frames (video as `ReceivedVideo`, audio as `ReceivedAudio`).

A network source that ends, fails or stalls is opened again after a backoff (0.5 s doubling to
`retry_max_s`, reset once frames flow); each outage publishes one `source_lost` error event
(`source_unavailable` while it never opened), so viewers see it, and media time continues
across it (the gap counts as time passed). A local file ends the session at its end. Frames
are taken at their own pace: a file or a bursty source (HLS segments) plays in real time, like
ffmpeg's -re.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import numpy as np

from stream.analysis.stages import StageSource
from stream.core.errors import MediaError
from stream.core.types import U8
from stream.live.events import Error
from stream.live.source import ReceivedAudio, ReceivedVideo, TrackSink

log = logging.getLogger(__name__)

_END = object()  # end of the source (a queue item)


#: Schemes whose path ends in a stream key (rtmp://host/APP/KEY).
_KEYED = frozenset({"rtmp", "rtmps", "rtmpe", "rtmpt", "rtmpte", "rtmpts"})
#: What a secret is replaced with.
_HIDDEN = "***"


def redact(url: str) -> str:
    """The URL without user:password, query and fragment (which often carry tokens), and
    without an RTMP stream key (the path after the application name)."""
    try:
        p = urlsplit(url)
        port = p.port
    except ValueError:
        return "<url>"
    if not p.scheme or len(p.scheme) == 1:  # a path (C:\\ on Windows too)
        return url
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((p.scheme, netloc, _public_path(p.scheme, p.path), "", ""))


def _public_path(scheme: str, path: str) -> str:
    if scheme.lower() not in _KEYED:
        return path
    app, _, key = path.lstrip("/").partition("/")
    return f"/{app}/{_HIDDEN}" if key else path


def _secrets(url: str) -> list[str]:
    """The parts of `url` that must not be shown, raw and percent-decoded, longest first."""
    try:
        p = urlsplit(url)
    except ValueError:
        return [url]
    if not p.scheme or len(p.scheme) == 1:
        return []
    found = {p.query, p.fragment, p.password or "", p.username or ""}
    userinfo, at, _ = p.netloc.rpartition("@")
    found.add(userinfo if at else "")
    found.update(v for _, v in parse_qsl(p.query, keep_blank_values=True))
    found.update(v for _, v in parse_qsl(p.fragment, keep_blank_values=True))
    if p.scheme.lower() in _KEYED:
        found.add(p.path.lstrip("/").partition("/")[2])
    found |= {unquote(f) for f in found}
    return sorted((f for f in found if len(f) >= 2), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """`text` (e.g. FFmpeg's error message) with `url` shown redacted and every secret of it
    (user, password, query, fragment, stream key; raw or percent-decoded) replaced by ***."""
    safe = redact(url)
    if safe == url:
        return text
    text = text.replace(url, safe)
    for secret in _secrets(url):
        text = text.replace(secret, _HIDDEN)
    return text


def is_local(url: str) -> bool:
    """A file path (ends at its end) rather than a network stream or device."""
    return "://" not in url and Path(url).is_file()


class UrlSource:
    """One stream URL read in a thread, handed to asyncio as video and audio iterators: a
    session's `MediaSource` (its outages become `error` events of the session).

    Args:
        url: what FFmpeg opens.
        listen: wait for a publisher to push to `url` (RTMP, SRT listener, TCP, HTTP).
        fmt: the input format when it cannot be guessed (e.g. "v4l2" for /dev/video0).
        audio: decode audio too (when the stream has it).
        retry_max_s: the longest wait between reconnects.
        on_status: called on the event loop with (code, message) at outages.
        options: extra FFmpeg options (e.g. {"rtsp_transport": "tcp"}).
    """

    def __init__(
        self,
        url: str,
        listen: bool = False,
        fmt: str | None = None,
        audio: bool = True,
        retry_max_s: float = 10.0,
        on_status: Callable[[str, str], None] | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.listen = listen
        self.fmt = fmt
        self.want_audio = audio
        self.retry_max_s = retry_max_s
        self.on_status = on_status
        self.options = dict(options or {})
        if listen:
            self.options.setdefault("listen", "1")
        self.local = is_local(url)
        self.opened = 0  # successful opens (1 + reconnects)
        self.outages = 0
        self.failure: str | None = None  # why a local file could not be read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._video: asyncio.Queue[Any] = asyncio.Queue()
        self._audio: asyncio.Queue[Any] = asyncio.Queue()
        self._audio_done = False
        self.done = asyncio.Event()  # set when reading has ended for good

    # -- asyncio side ----------------------------------------------------------------------
    async def start(self, sink: TrackSink) -> None:
        """Start reading in a thread; video (and audio when enabled) become the sink's tracks."""
        if self.on_status is None:

            def status(code: str, message: str) -> None:
                sink.publish(Error(code, message))

            self.on_status = status
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="url-source", daemon=True)
        self._thread.start()
        sink.add_video("video", self.video())
        if self.want_audio:
            sink.add_audio("audio", self.audio())

    def stop(self) -> None:
        """Stop reading (a blocking open or read ends at its timeout; the thread is a daemon)."""
        self._stop.set()

    async def close(self) -> None:
        self.stop()

    async def video(self) -> AsyncIterator[ReceivedVideo]:
        while (item := await self._video.get()) is not _END:
            yield item

    async def audio(self) -> AsyncIterator[ReceivedAudio]:
        while (item := await self._audio.get()) is not _END:
            yield item

    def _put(self, queue: asyncio.Queue[Any], item: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed
            self._loop.call_soon_threadsafe(queue.put_nowait, item)

    def _status(self, code: str, message: str) -> None:
        log.info("%s: %s", redact(self.url), message)
        if self.on_status is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.on_status, code, message)

    # -- reading thread --------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.5
        offset = 0.0  # media time at the start of the current connection
        last_t = 0.0
        lost_at: float | None = None
        reported = False
        try:
            while not self._stop.is_set():
                why = ""
                flowed = False
                try:
                    got, last_t, flowed = self._read_once(offset)
                    if self.local and not self._stop.is_set():
                        if not got:
                            self.failure = f"no frames in {self.url} (empty or truncated?)"
                            self._status("source_failed", self.failure)
                        return  # a file ends at its end
                    why = "the stream ended" if got else "no media in the stream"
                except Exception as exc:  # av.error.* and OSError: FFmpeg's one-line reasons
                    why = scrub(str(exc).strip() or type(exc).__name__, self.url)
                    if self.local or self._not_media(exc):  # FFmpeg's reason, not its path
                        reason = getattr(exc, "strerror", None) or why
                        self.failure = f"cannot read {self.url}: {reason}"
                        self._status("source_failed", self.failure)
                        return
                if self._stop.is_set():
                    return
                if flowed:
                    backoff, reported = 0.5, False
                if lost_at is None or flowed:
                    lost_at = time.perf_counter()
                if not reported:
                    self.outages += 1
                    reported = True
                    self._status(
                        "source_lost" if self.opened else "source_unavailable",
                        f"{redact(self.url)}: {why}; reconnecting (every {backoff:g} s "
                        f"doubling up to {self.retry_max_s:g} s)",
                    )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                # Media time goes on across the outage: the gap counts as time passed.
                offset = last_t + (time.perf_counter() - lost_at)
        finally:
            self._put(self._video, _END)
            self._put(self._audio, _END)
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.done.set)

    def _not_media(self, exc: Exception) -> bool:
        """A device or pipe path (no scheme) whose first open found no media at all, such as
        /dev/null: retrying would not help (a camera that is busy or a pipe without a writer
        yet fails otherwise, and is retried)."""
        import av

        path = not self.listen and "://" not in self.url and ":" not in self.url
        return path and not self.opened and isinstance(exc, av.error.InvalidDataError)

    def _read_once(self, offset: float) -> tuple[bool, float, bool]:
        """Open, read until the end or an error; returns (got frames, last media time, flowed).

        `flowed` means frames came for a while (the backoff starts over after it)."""
        import av

        timeout = (30.0 if self.listen else 10.0, 10.0)
        container = av.open(self.url, format=self.fmt, options=self.options, timeout=timeout)
        self.opened += 1
        if self.opened > 1:
            log.info("%s: reconnected", redact(self.url))
        try:
            streams: dict[str, int] = {}
            if container.streams.video:
                streams["video"] = 0
                container.streams.video[0].thread_type = "AUTO"
            if self.want_audio and container.streams.audio:
                streams["audio"] = 0
            elif self.want_audio and not self._audio_done:  # no audio here: end that track
                self._audio_done = True
                self._put(self._audio, _END)
            if not streams:
                raise ValueError("the stream has neither video nor audio")
            first: float | None = None
            wall0 = time.perf_counter()
            t = offset
            frames = 0
            for frame in container.decode(**streams):
                if self._stop.is_set():
                    break
                if not isinstance(frame, av.VideoFrame | av.AudioFrame) or frame.time is None:
                    continue
                first = frame.time if first is None else first
                rel = max(frame.time - first, 0.0)
                ahead = rel - (time.perf_counter() - wall0)
                if ahead > 0.005:  # real time, like -re (files, bursty segments)
                    self._stop.wait(min(ahead, 1.0))
                received = time.perf_counter()
                frames += 1
                if isinstance(frame, av.VideoFrame):
                    t = max(offset + rel, t)

                    def image(f: Any = frame) -> U8:
                        return np.ascontiguousarray(f.to_ndarray(format="bgr24"))

                    self._put(self._video, ReceivedVideo(t, received, image))
                elif not self._audio_done:
                    self._put(self._audio, ReceivedAudio(frame, received))
            return frames > 0, t, frames > 10
        finally:
            container.close()


async def run_watch(
    config: Any,
    url: str,
    purpose: str,
    listen: bool = False,
    fmt: str | None = None,
    events: Path | None = None,
    reports_dir: Path | None = None,
    duration: float | None = None,
    retry_max_s: float = 10.0,
    stages: StageSource | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any] | None:
    """`emotion-stream watch`: one live session fed by a URL, with the server's viewer page and
    report downloads; ends at the end of a file, after `duration`, or at Ctrl-C / SIGTERM.

    Args:
        events: write every event as a JSON line here ("-": stdout).
        reports_dir: write the session's JSON, CSV and HTML reports here when it ends.
        stages: loaded stages (default: load the models).
        stop: ends the session like Ctrl-C when set.

    Returns:
        The session summary event.

    Raises:
        MediaError: a local file is missing, unreadable, empty or truncated (exit status 3).
    """
    from stream.live.runner import run_live

    if not listen and fmt is None:
        check_local(url)
    source = UrlSource(url, listen, fmt, config.audio.enabled, retry_max_s)
    what = f"listening for a publisher at {redact(url)}" if listen else f"watching {redact(url)}"
    summary = await run_live(
        config, purpose, source, "watch", what, events, reports_dir, duration, stages, stop=stop
    )
    if source.failure is not None:
        raise MediaError(source.failure)
    return summary


def check_local(url: str) -> None:
    """Refuse a path (no scheme) that names no readable, non-empty file or device.

    Raises:
        MediaError: missing, a folder, unreadable or empty.
    """
    if "://" in url or ":" in url:  # a URL, or an FFmpeg protocol ("pipe:0")
        return
    path = Path(url)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MediaError(f"file not found: {url}") from None
    except OSError as exc:  # a symlink loop, a name too long, no permission on a folder
        raise MediaError(f"cannot open {url}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise MediaError(f"{url} is a folder, not a video file")
    if not os.access(path, os.R_OK):
        raise MediaError(f"cannot read {url}: permission denied")
    if path.is_file() and st.st_size == 0:
        raise MediaError(f"file is empty: {url}")
