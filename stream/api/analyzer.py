"""`Analyzer`: analyse frames and audio from your own source (a capture pipeline, a robot's
camera, a simulator) with the same per-stream analysis and the same schedule as a file."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.analysis.schedule import file_schedule
from stream.analysis.stream import StreamAnalysis
from stream.analysis.voice import SpeakerUpdate, VoiceTrack
from stream.api.results import Analysis
from stream.api.run import make_config, public, stages_for
from stream.core.config import Config
from stream.core.errors import ConfigError, MediaError
from stream.core.timing import FrameGrid
from stream.core.types import MediaInfo, VideoFrame
from stream.live.events import (
    Event,
    FaceSummaries,
    Frame,
    Prosody,
    SpeakerActive,
    behaviour_event,
    face_payloads,
)
from stream.voice.resample import array_frame

if TYPE_CHECKING:
    from stream.analysis.stages import StageSource

#: Audio timestamps may jitter this much (seconds) before a gap is filled with silence or an
#: overlap is cut.
AUDIO_JITTER_S = 0.02
#: The longest audio gap filled with silence; a longer one restarts the track's audio clock.
MAX_AUDIO_GAP_S = 10.0


class _Track:
    """Per video track: the analysis grid and the mouth-sampling grid (what runs on an
    analysed frame is planned by the stream's `FixedSchedule`, as for a file)."""

    def __init__(self, fps: float, config: Config) -> None:
        self.grid = FrameGrid(fps)
        self.read = FrameGrid(fps)
        self.mouths = FrameGrid(max(fps, config.audio.mouth_fps))
        self.received = 0
        self.dropped = 0
        self.size = (0, 0)
        self.done: deque[float] = deque()  # wall times of the analysed frames, last 2 s

    def tick(self, now: float) -> float:
        """Count an analysed frame; returns the analysed frames per second of wall time."""
        self.done.append(now)
        while now - self.done[0] > 2.0:
            self.done.popleft()
        span = self.done[-1] - self.done[0]
        return (len(self.done) - 1) / span if span > 0 else 0.0


class _Audio:
    """Per audio track: its voice analysis and the seconds fed so far (its clock starts at
    the first chunk's time: `voice.offset`)."""

    def __init__(self, voice: VoiceTrack) -> None:
        self.voice = voice
        self.samples = 0.0  # seconds fed


class Analyzer:
    """Analyse video frames and audio you push, as `analyze` analyses a file.

    Frames are analysed on the file schedule: `fps` frames per second of their timestamps
    (others are skipped, or only track mouths while audio is pushed), detection and expression
    at `analyze.detect_fps` / `analyze.emotion_fps`. Push video and audio in time order,
    interleaved (audio is matched to the faces whose mouths move with it). One Analyzer is one
    stream: push from one thread at a time.

        with stream.Analyzer(fps=10) as an:
            for image, t in my_camera():
                for event in an.push_video(image, t):
                    ...
        analysis = an.result

    Args:
        fps: analysed frames per second of the frames' timestamps (default 10).
        voice: allow `push_audio` (default: as configured, on).
        models: models folder (default `$EMOTION_STREAM_MODELS` or `models.dir`).
        config: TOML config file or loaded `Config`.
        provider: "auto", "cpu" or "cuda".
        stages: loaded models to share between analyzers (`Analyzer.stages` of another);
            default: loaded once per configuration.
        name: the source's name in reports.

    Raises:
        ConfigError, ModelError: as `stream.analyze`.
    """

    @public
    def __init__(
        self,
        *,
        fps: float | None = None,
        voice: bool | None = None,
        models: str | Path | None = None,
        config: str | Path | Config | None = None,
        provider: str | None = None,
        stages: StageSource | None = None,
        name: str = "frames",
    ) -> None:
        cfg = make_config(fps=fps, voice=voice, models=models, config=config, provider=provider)
        self.config = cfg
        self.stages: StageSource = stages if stages is not None else stages_for(cfg)
        self.fps = cfg.analyze.fps
        self.name = name
        a = cfg.analyze
        self._a = StreamAnalysis(
            self.stages,
            self.fps,
            thumbnails=True,
            hold_voice=True,
            config=cfg,
            schedule=lambda: file_schedule(a, voice=cfg.audio.enabled),
        )
        self._tracks: dict[str, _Track] = {}
        self._audio: dict[str, _Audio] = {}
        self._index = 0
        self._started = time.perf_counter()
        self._last_t = 0.0
        self._has_audio = False
        self.result: Analysis | None = None  # set by close()

    # -- input -----------------------------------------------------------------------------
    @public
    def push_video(
        self, image: Any, t: float, *, rgb: bool = False, track: str = "video"
    ) -> list[Event]:
        """Push one video frame.

        Args:
            image: HxWx3 uint8 pixels, BGR (OpenCV) unless `rgb`.
            t: its time in seconds (media or capture time; increasing).
            rgb: the pixels are RGB (PIL, imageio, most cameras' SDKs).
            track: which camera (faces are numbered across tracks).

        Returns:
            A `Frame` event when the frame was analysed (the live `frame` event: faces with
            id, name, box, label, confidence, probabilities, valence/arousal), and `Prosody` /
            `SpeakerActive` events of the audio this frame's time decided, and `Gesture` /
            `AttentionDrop` events (nods, shakes, looking-away spans) that ended with it.

        Raises:
            MediaError: not an HxWx3 uint8 image, or `t` is not finite.
        """
        self._open()
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise MediaError(f"a frame must be HxWx3 uint8 pixels, got {img.shape} {img.dtype}")
        if rgb:
            img = np.ascontiguousarray(img[..., ::-1])
        if not np.isfinite(t):
            raise MediaError(f"a frame's time must be finite, got {t}")
        tr = self._tracks.get(track)
        if tr is None:
            tr = self._tracks[track] = _Track(self.fps, self.config)
        tr.received += 1
        tr.size = (img.shape[1], img.shape[0])
        events: list[Event] = []
        read = tr.mouths if self._has_audio else tr.read
        if not read.take(t):
            tr.dropped += 1
            return events
        frame = VideoFrame(img, float(t), self._index)
        self._index += 1
        self._last_t = max(self._last_t, float(t))
        if tr.grid.take(t):
            began = time.perf_counter()
            result = self._a.push_video(frame, track)  # the track's FixedSchedule plans it
            now = time.perf_counter()
            metrics = {
                "analysed_fps": round(tr.tick(now), 2),
                "received_frames": tr.received,
                "dropped_frames": tr.dropped,
                "queue_age_ms": 0.0,
                "latency_ms": round((now - began) * 1e3, 2),
                "detect_every": 1,
                "stage_ms": {k: round(v, 2) for k, v in result.timings_ms.items()},
            }
            payload = face_payloads(
                result,
                self._a.aggregator.names,
                self.stages.supported,
                self.stages.va_estimated,
                self.config.actions.raw,
            )
            events.append(
                Frame(track, round(float(t), 4), result.width, result.height, payload, metrics)
            )
        else:  # between analysed frames: track faces and sample mouths for the voice
            result = self._a.push_video(frame, track, detect=True, emotion_for=set(), record=False)
        events += [behaviour_event(e) for e in result.behaviour_events]
        return events + self._speaker_events(self._a.release_voice())

    @public
    def push_audio(
        self, samples: Any, sample_rate: int, t: float, *, track: str = "audio"
    ) -> list[Event]:
        """Push a chunk of audio (any length; analysed in batches of about 0.1 s).

        Args:
            samples: float samples in [-1, 1] or int16, shaped (n,) or (n, channels)
                (channels are averaged).
            sample_rate: samples per second (resampled as needed).
            t: the time of the chunk's first sample, on the video frames' clock. Gaps are
                filled with silence; overlaps are cut.
            track: which microphone (one voice analysis per track).

        Returns:
            `Prosody` and `SpeakerActive` events decided so far (a report waits until video
            has reached its time, so that the matching face's mouth has been seen).

        Raises:
            MediaError: samples of another shape or type, or a bad rate or time.
            ConfigError: voice analysis is off (`voice=False` or `audio.enabled = false`).
        """
        self._open()
        if not self.config.audio.enabled:
            raise ConfigError("voice analysis is off (voice=False or audio.enabled = false)")
        x = _mono(samples)
        if sample_rate <= 0 or not np.isfinite(t):
            raise MediaError(f"bad audio chunk: sample_rate {sample_rate}, t {t}")
        au = self._audio.get(track)
        if au is None:
            au = self._audio[track] = _Audio(self._a.add_voice(track, offset=float(t)))
            self._has_audio = True
        lag = float(t) - (au.voice.offset + au.samples)
        if lag > MAX_AUDIO_GAP_S:
            raise MediaError(
                f"audio track {track} jumps {lag:.1f} s ahead (> {MAX_AUDIO_GAP_S:g} s of gap)"
            )
        if lag > AUDIO_JITTER_S:
            x = np.concatenate([np.zeros(round(lag * sample_rate), np.float32), x])
        elif lag < -AUDIO_JITTER_S:
            x = x[min(round(-lag * sample_rate), len(x)) :]
        if not len(x):
            return []
        au.samples += len(x) / sample_rate
        frame = array_frame(x, int(sample_rate))
        return self._speaker_events(au.voice.push(frame, until=self._a.voice_until))

    def _speaker_events(self, updates: list[SpeakerUpdate]) -> list[Event]:
        out: list[Event] = []
        for u in updates:
            face = u.active.face
            name = self._a.name_of(face) if face is not None else None
            voice = (u.voice_id, u.voice_name, u.voice_face)
            out.append(Prosody(u.speaker, face, name, u.report.to_dict(), *voice))
            if u.changed:
                conf = round(max(u.active.confidence, 0.0), 3)
                out.append(SpeakerActive(u.speaker, face, name, u.active.speaking, conf, *voice))
        return out

    # -- control ---------------------------------------------------------------------------
    def rename(self, face_id: int, name: str) -> None:
        """Name a face in events and results (as the live `rename` command)."""
        self._a.rename(face_id, name)

    def exclude(self, face_id: int, excluded: bool = True) -> None:
        """Stop (or resume) computing and recording a face's expression."""
        self._a.set_excluded(face_id, excluded)

    def summary(self) -> FaceSummaries:
        """Per-face and overall summaries so far (the live `face.summary` event)."""
        return FaceSummaries(**self._a.summary())

    # -- end -------------------------------------------------------------------------------
    @public
    def close(self, end_s: float | None = None) -> Analysis:
        """End the stream and return its analysis (also kept as `result`); closing twice
        returns the same analysis.

        Args:
            end_s: where the media ends (the last frame stands for the time until then;
                default: one analysed frame interval).
        """
        if self.result is not None:
            return self.result
        for au in self._audio.values():  # the end of input flushes each voice chain
            au.voice.push(None, until=self._a.voice_until)
        self._a.finish(end_s)
        if self.config.tracking.consolidate:
            self._a.consolidate_identities()
        w, h = next(iter(self._tracks.values())).size if self._tracks else (0, 0)
        end = end_s if end_s is not None else self._last_t + 1.0 / self.fps
        info = MediaInfo(
            Path(self.name),
            "video" if self._tracks else "audio",
            w,
            h,
            end,
            0.0,
            "frames",
            bool(self._audio),
        )
        self.result = Analysis(self._a.result(info, time.perf_counter() - self._started))
        return self.result

    def _open(self) -> None:
        if self.result is not None:
            raise ConfigError("this Analyzer is closed: make a new one")

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()


def _mono(samples: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    """float32 mono samples from (n,) or (n, channels) float or int16 samples."""
    x = np.asarray(samples)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif x.dtype.kind != "f":
        raise MediaError(f"audio samples must be float or int16, got {x.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise MediaError(f"audio must be shaped (n,) or (n, channels), got {np.shape(samples)}")
    return np.ascontiguousarray(x, np.float32)
