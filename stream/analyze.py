"""Offline analysis of a video or image file: per-face identities, expressions and summaries."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream import __version__
from stream.aggregate import Aggregator, FaceSummary, OverallSummary, TimelinePoint
from stream.align import crop_squares
from stream.config import Config
from stream.errors import MediaError, ModelError
from stream.labels import LABELS
from stream.media import MediaInfo, probe, read_audio, read_frames
from stream.pipeline import FrameResult, VisionPipeline, make_factory
from stream.prosody import ProsodyReport
from stream.speaker import MouthSample, SpeakerMatcher, attribute_speech
from stream.types import VideoFrame
from stream.voice import VoiceAnalysis, VoiceAnalyzer, summarise_voice

THUMB_PX = 96


@dataclass
class Analysis:
    """Result of analysing one file."""

    info: MediaInfo
    fps: float
    frames: int
    faces: list[FaceSummary]
    overall: OverallSummary
    timelines: dict[int, list[TimelinePoint]]
    thumbnails: dict[int, bytes]  # JPEG per face number
    va_estimated: bool
    supported: list[str]
    models: list[str]
    wall_s: float
    stage_ms: dict[str, float]
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    voice: VoiceAnalysis | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (timelines go to CSV/HTML, not here)."""
        return {
            "schema": "emotion-stream.analysis",
            "schema_version": 1,
            "tool": {"name": "emotion-stream", "version": __version__},
            "source": {
                "path": str(self.info.path),
                "kind": self.info.kind,
                "width": self.info.width,
                "height": self.info.height,
                "duration_s": round(self.info.duration, 3),
                "fps": round(self.info.fps, 3),
                "codec": self.info.codec,
            },
            "analysis": {
                "fps": self.fps,
                "analysed_frames": self.frames,
                "wall_s": round(self.wall_s, 3),
                "stage_ms_mean": {k: round(v, 3) for k, v in self.stage_ms.items()},
                "models": self.models,
                "labels_supported": self.supported,
                "labels_not_supported": [x for x in LABELS if x not in self.supported],
                "complete": not self.error,
                "error": self.error or None,
                "warnings": self.warnings,
            },
            "notice": (
                "Facial expressions are not feelings: labels describe visible expressions as "
                "scored by machine-learning models, each with its confidence. Valence/arousal "
                "marked estimated are derived from expression probabilities, not measured."
            ),
            "faces": [f.to_dict(self.va_estimated) for f in self.faces],
            "overall": self.overall.to_dict(),
            "voice": (
                self.voice.to_dict({f.number: f.name for f in self.faces}) if self.voice else None
            ),
        }


def _thumbnail(frame: VideoFrame, box: np.ndarray) -> bytes:
    crop = crop_squares(frame.image, box[None], THUMB_PX, 1.3)[0]
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return bytes(buf) if ok else b""


def analyze_file(
    path: Path,
    config: Config,
    pipeline: VisionPipeline | None = None,
    fps: float | None = None,
    progress: Callable[[Iterable[VideoFrame], MediaInfo], Iterable[VideoFrame]] | None = None,
) -> Analysis:
    """Analyse a video or image file.

    Args:
        path: the file.
        config: configuration (analysis rate, models, thresholds).
        pipeline: a ready pipeline (reset first); built from `config` if omitted.
        fps: analysis rate in frames per second of media time (default `analyze.fps`).
        progress: wraps the frame iterator (e.g. with a progress bar).

    Returns:
        The analysis; `error` is set (and results are partial) when decoding failed part-way.

    Raises:
        MediaError: the file cannot be read at all.
    """
    info = probe(path)
    fps = fps or config.analyze.fps
    if info.kind == "image":
        config = config.replace("tracking", min_hits=1, tentative_max_s=0.0)
        pipeline = None  # images need their own tracker settings
    pipeline = pipeline or VisionPipeline.from_config(config)
    pipeline.reset()
    with_voice = info.kind == "video" and info.has_audio and config.audio.enabled
    mouths: list[tuple[float, int, MouthSample]] = []
    # The audio chain runs in a thread beside the video loop: it is mostly native code that
    # releases the GIL (DeepFilterNet, ONNX Runtime, PyAV), so both cores stay busy.
    pool = ThreadPoolExecutor(1, thread_name_prefix="voice") if with_voice else None
    audio_job = pool.submit(analyse_audio, path, config, pipeline) if pool else None
    agg = Aggregator(1.0 / fps, config.analyze.max_gap_s, pipeline.emotion.supported)
    best: dict[int, tuple[float, bytes]] = {}
    stage_sum: dict[str, float] = {}
    frames = 0
    error = ""
    t_start = time.perf_counter()
    # With voice, frames are read at the mouth-sampling rate; only those on the analysis grid
    # get the full analysis, the others just move the faces along and measure mouths.
    read_fps = max(fps, config.audio.mouth_fps) if with_voice else fps
    source: Iterable[VideoFrame] = read_frames(path, read_fps)
    if progress is not None:
        source = progress(source, info)
    next_t = -1.0
    try:
        for frame in source:
            if frame.t < next_t - 1e-3:
                # Detected, not flow-propagated: mouth corners must be where the mouth is
                # (measured: 85% vs 80% of voiced time matched on the two-speaker video).
                light = pipeline.process(frame, emotion_for=set())
                mouths += [(frame.t, f.number, f.mouth) for f in light.faces if f.mouth]
                continue
            next_t = frame.t + 1.0 / fps if next_t < 0 else max(next_t + 1.0 / fps, frame.t)
            result: FrameResult = pipeline.process(frame)
            mouths += [(frame.t, f.number, f.mouth) for f in result.faces if f.mouth]
            frames += 1
            for k, v in result.timings_ms.items():
                stage_sum[k] = stage_sum.get(k, 0.0) + v
            agg.add_frame(frame.t, [f.sample for f in result.faces])
            for f in result.faces:
                x1, y1, x2, y2 = f.box
                q = float(f.score) * float(min(x2 - x1, y2 - y1))
                if q > best.get(f.number, (-1.0, b""))[0]:
                    best[f.number] = (q, _thumbnail(frame, f.box))
    except MediaError as exc:
        error = str(exc)
    agg.finish(info.duration if info.kind == "video" and info.duration > 0 else None)
    faces = agg.faces()
    voice = None
    warnings = []
    if audio_job is not None and pool is not None:
        try:
            reports, energy = audio_job.result()
            a = config.audio
            matcher = SpeakerMatcher(a.match_window_s, a.match_threshold)
            active = attribute_speech(reports, energy, mouths, matcher)
            voice = summarise_voice(list(zip(reports, active, strict=True)), a.hop_s, a.denoise)
        except (MediaError, ModelError) as exc:
            warnings.append(f"voice not analysed: {exc}")
        finally:
            pool.shutdown()
    return Analysis(
        info=info,
        fps=fps,
        frames=frames,
        faces=faces,
        overall=agg.overall(),
        timelines={f.number: agg.timeline(f.number) for f in faces},
        thumbnails={k: v[1] for k, v in best.items()},
        va_estimated=pipeline.va_estimated,
        supported=[lab for lab, s in zip(LABELS, pipeline.emotion.supported, strict=True) if s],
        models=[m.model.spec.name for m in pipeline.emotion.members]
        + [config.models.detector, config.models.embedder],
        wall_s=time.perf_counter() - t_start,
        stage_ms={k: v / max(frames, 1) for k, v in stage_sum.items()},
        error=error,
        warnings=warnings,
        voice=voice,
    )


def analyse_audio(
    path: Path, config: Config, pipeline: VisionPipeline
) -> tuple[list[ProsodyReport], list[tuple[float, float]]]:
    """Prosody reports and the energy envelope of the file's audio, on the video's clock."""
    factory = pipeline.factory or make_factory(config)
    offset, frames = read_audio(path)
    analyzer = VoiceAnalyzer(factory, config.audio)
    energy: list[tuple[float, float]] = []
    reports: list[ProsodyReport] = []
    batch: list[Any] = []
    for frame in [*frames, None]:
        batch.append(frame)
        if frame is not None and len(batch) < 8:  # feed about 0.2 s at a time
            continue
        update = analyzer.feed_many(batch)
        batch = []
        energy += [(h.t + offset, h.energy_dbfs) for h in update.hops]
        reports += [dataclasses.replace(r, t=r.t + offset) for r in update.reports]
    return reports, energy


def with_fps(config: Config, fps: float | None) -> Config:
    """Config with `analyze.fps` replaced (validated)."""
    return config if fps is None else config.replace("analyze", fps=fps)
