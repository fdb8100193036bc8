"""`analyze`: a loop that feeds a video or image file through a `StreamAnalysis`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from stream.analysis.schedule import file_schedule
from stream.analysis.stages import Stages
from stream.analysis.stream import StreamAnalysis
from stream.analysis.summary import Analysis
from stream.analysis.voice import AnalysedAudio, VoiceTrack
from stream.core.allocator import trim_allocator
from stream.core.config import Config
from stream.core.errors import EmotionStreamError, MediaError, NoFacesError, NoSpeechError
from stream.core.timing import FrameGrid
from stream.core.types import MediaInfo, VideoFrame
from stream.offline.media import probe, read_audio, read_frames

#: How far video and audio may drift apart on the analysis clock while matching voices to
#: faces (the matcher keeps `match_window_s + 1 s` of history).
VOICE_SLACK_S = 0.5
SPEAKER = "audio"
VIDEO = "video"  # the file's video track
#: Seconds of work between hand-backs of freed C heap pages while a file is analysed.
TRIM_EVERY_S = 1.0


class HeapTrim:
    """Hands the C heaps' freed pages back to the system every `every_s` seconds of work.

    Model calls free tens of MB of scratch memory per frame (detector, embedder, pose) and
    glibc keeps most of it, fragmented among live blocks: on the 9-face gallery the process
    held ~110 MB free inside its heaps at its peak. A trim costs a few milliseconds (~1% at
    one a second); results do not change.
    """

    def __init__(
        self,
        every_s: float = TRIM_EVERY_S,
        clock: Callable[[], float] = time.perf_counter,
        trim: Callable[[], bool] = trim_allocator,
    ) -> None:
        if every_s <= 0:
            raise ValueError(f"HeapTrim: every_s must be > 0, got {every_s}")
        self.every_s = every_s
        self.clock = clock
        self.trim = trim
        self.last = clock()
        self.trims = 0

    def tick(self) -> None:
        """Trim when `every_s` has passed since the last trim."""
        now = self.clock()
        if now - self.last >= self.every_s:
            self.trim()
            self.trims += 1
            self.last = self.clock()


@dataclass
class _AudioFeed:
    """The file's audio, analysed in a thread beside the video loop: the chain is mostly native
    code that releases the GIL (DeepFilterNet, ONNX Runtime, PyAV), so both cores stay busy."""

    analysis: StreamAnalysis
    voice: VoiceTrack
    path: Path

    def __post_init__(self) -> None:
        self.updates: queue.Queue[AnalysedAudio | BaseException | None] = queue.Queue(8)
        self.done = False
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="voice", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            offset, frames = read_audio(self.path)
            self.voice.offset = offset
            for frame in _with_end(frames):
                if self.stop.is_set():
                    break
                batch = self.voice.collect(frame)
                if batch is not None:
                    self.updates.put(self.voice.analyse(batch))
        except BaseException as exc:  # reported as a warning by the video loop
            self.updates.put(exc)
        self.updates.put(None)

    def pump(self, video_t: float) -> None:
        """Accept analysed audio up to `video_t + slack`, waiting while it lags behind."""
        while not self.done:
            reached = self.voice.audio_end + self.voice.offset  # accepted audio, video clock
            behind = reached < video_t - VOICE_SLACK_S
            ahead = reached > video_t + VOICE_SLACK_S
            if ahead:
                return
            try:
                item = self.updates.get(block=behind)
            except queue.Empty:
                return
            if item is None:
                self.done = True
            elif isinstance(item, BaseException):
                self.error = item
            else:
                self.analysis.accept(SPEAKER, item)

    def close(self) -> None:
        self.stop.set()
        while not self.done:
            item = self.updates.get()
            self.done = item is None
        self.thread.join()


def analyze_file(
    path: Path,
    config: Config,
    stages: Stages | None = None,
    fps: float | None = None,
    progress: Callable[[Iterable[VideoFrame], MediaInfo], Iterable[VideoFrame]] | None = None,
) -> Analysis:
    """Analyse a video or image file.

    Args:
        path: the file.
        config: configuration (analysis rate, models, thresholds).
        stages: loaded models to reuse; loaded from `config` if omitted.
        fps: analysis rate in frames per second of media time (default `analyze.fps`).
        progress: wraps the frame iterator (e.g. with a progress bar).

    Returns:
        The analysis; `error` is set (and results are partial) when decoding failed part-way.

    Raises:
        MediaError: the file cannot be read at all.
    """
    info = probe(path)
    fps = fps or config.analyze.fps
    if info.kind == "audio":
        return analyze_audio_file(info, config, stages, fps)
    if info.kind == "image":
        config = config.replace("tracking", min_hits=1, tentative_max_s=0.0)
    stages = stages or Stages(config)
    with_voice = info.kind == "video" and info.has_audio and config.audio.enabled
    a = config.analyze
    analysis = StreamAnalysis(
        stages,
        fps,
        thumbnails=True,
        hold_voice=True,
        config=config,
        schedule=lambda: file_schedule(a, voice=with_voice),
    )
    warnings: list[str] = []
    audio: _AudioFeed | None = None
    if with_voice:
        try:
            audio = _AudioFeed(analysis, analysis.add_voice(SPEAKER), path)
        except EmotionStreamError as exc:
            warnings.append(f"voice not analysed: {exc}")
    error = ""
    t_start = time.perf_counter()
    # With voice, frames are read at the mouth-sampling rate; only those on the analysis grid
    # get the full analysis, the others are detected (not flow-propagated: mouth corners must be
    # where the mouth is; measured 85% vs 80% of voiced time matched on the two-speaker video)
    # to measure mouths.
    read_fps = max(fps, config.audio.mouth_fps) if audio is not None else fps
    source: Iterable[VideoFrame] = prefetched(read_frames(path, read_fps, warnings))
    if progress is not None:
        source = progress(source, info)
    grid = FrameGrid(fps)
    last_t = 0.0
    heap = HeapTrim()
    try:
        # OpenCV's own worker threads only add overhead beside the pipeline's threads (the
        # same pixels: its results do not depend on how many there are).
        with opencv_threads(1):
            # One frame ahead: the detector starts on the next frame while this one is analysed
            # (VideoTracks.ahead; the same results).
            for frame, on_grid, nxt in _look_ahead(source, grid):
                heap.tick()
                last_t = frame.t
                if audio is not None:
                    audio.pump(frame.t)
                if nxt is not None:
                    analysis.video.ahead(VIDEO, nxt[0], planned=nxt[1])
                if on_grid:
                    analysis.push_video(frame, VIDEO)  # the track's FixedSchedule plans it
                else:
                    analysis.push_video(frame, VIDEO, detect=True, emotion_for=set(), record=False)
                if audio is not None:
                    analysis.release_voice()
    except MediaError as exc:
        error = str(exc)
    finally:
        if audio is not None and error:
            audio.close()
    if audio is not None:
        audio.pump(float("inf"))
        audio.close()
        if audio.error is not None:
            analysis.drop_voice(SPEAKER)
            warnings.append(f"voice not analysed: {audio.error}")
    if info.kind == "video" and last_t > info.duration:
        # Timestamps restarted (concatenated recordings): the media ran longer than announced.
        info = dataclasses.replace(info, duration=last_t + 1.0 / (info.fps or fps))
    analysis.finish(info.duration if info.kind == "video" and info.duration > 0 else None)
    if config.tracking.consolidate:
        analysis.consolidate_identities()
    return analysis.result(info, time.perf_counter() - t_start, error, warnings)


def analyze_audio_file(
    info: MediaInfo, config: Config, stages: Stages | None, fps: float
) -> Analysis:
    """Analyse an audio-only file: voice activity, prosody and who spoke when.

    Raises:
        MediaError: the file cannot be read, or voice analysis is disabled.
    """
    if not config.audio.enabled:
        raise MediaError(f"{info.path}: audio only, and audio.enabled is false: nothing to analyse")
    stages = stages or Stages(config, voice=True)
    analysis = StreamAnalysis(stages, fps, hold_voice=False, config=config, online_speakers=False)
    voice = analysis.add_voice(SPEAKER)
    t_start = time.perf_counter()
    error = ""
    _, frames = read_audio(info.path)
    try:
        voice.push_all(_with_end(frames), until=analysis.voice_until)
    except MediaError as exc:
        error = str(exc)
    end = max(voice.audio_end, 0.0)
    duration = info.duration if info.duration > 0 else end
    if duration <= 0:
        duration = end
    info = dataclasses.replace(info, duration=max(duration, end))
    analysis.finish(None)
    return analysis.result(info, time.perf_counter() - t_start, error)


def has_speech(a: Analysis) -> bool:
    """Whether any speech was found (voice activity or a diarized speaker)."""
    return bool(a.voice is not None and a.voice.speech_s > 0) or bool(
        a.speakers and a.speakers.speakers
    )


def require_findings(a: Analysis, path: Path | str) -> None:
    """Raise when nothing was found: no speech in an audio file, no face (and no speech).

    Raises:
        NoSpeechError: an audio file without speech ("no speech found in X").
        NoFacesError: no face and no speech; the message says both when the audio was heard.
    """
    speech = has_speech(a)
    if a.info.kind == "audio" and not speech:
        raise NoSpeechError(f"no speech found in {path} ({a.info.duration:.1f} s of audio)")
    if a.faces or speech:
        return
    heard = a.info.kind == "video" and a.voice is not None  # its audio track was analysed
    over = f" over {a.info.duration:.1f} s" if a.info.kind == "video" else ""
    raise NoFacesError(
        f"no faces {'and no speech ' if heard else ''}found in {path} "
        f"({a.frames} frame(s) analysed{over})"
    )


def prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """The items, produced by a thread up to `depth` ahead (decoding, mostly native code that
    releases the GIL, overlaps the analysis); its exception is raised in order."""
    out: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the consumer
            put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = out.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()


_forked = threading.Event()
# In a process forked from one whose OpenCV thread pool had run (the Python API's
# analyze_many workers), cv2.setNumThreads waits for pool threads that do not exist in the
# child: it hung there. The thread count only changes speed, so forked children leave it.
os.register_at_fork(after_in_child=_forked.set)


@contextlib.contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's thread count set to `n` for the block (process-wide), then restored; left as
    it is in a forked child (see `_forked`)."""
    if _forked.is_set():
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _look_ahead(
    frames: Iterable[VideoFrame], grid: FrameGrid
) -> Iterator[tuple[VideoFrame, bool, tuple[VideoFrame, bool] | None]]:
    """(frame, on the analysis grid?, the next frame and whether it is on the grid, or None at
    the end). A decoding error after a frame is raised once that frame has been handled."""
    it = iter(frames)
    cur = next(it, None)
    take = cur is not None and grid.take(cur.t)
    while cur is not None:
        error: MediaError | None = None
        try:
            nxt = next(it, None)
        except MediaError as exc:
            nxt, error = None, exc
        nxt_take = nxt is not None and grid.take(nxt.t)
        yield cur, take, (nxt, nxt_take) if nxt is not None else None
        if error is not None:
            raise error
        cur, take = nxt, nxt_take


def _with_end(frames: Iterable[Any]) -> Iterator[Any]:
    """The frames, then None (flushes the voice chain)."""
    yield from frames
    yield None


def with_fps(config: Config, fps: float | None) -> Config:
    """Config with `analyze.fps` replaced (validated)."""
    return config if fps is None else config.replace("analyze", fps=fps)
