"""Offline analysis of a video or image file: per-face identities, expressions and summaries."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream import __version__
from stream.aggregate import Aggregator, FaceSummary, OverallSummary, TimelinePoint
from stream.align import crop_squares
from stream.config import Config
from stream.errors import MediaError
from stream.labels import LABELS
from stream.media import MediaInfo, probe, read_frames
from stream.pipeline import FrameResult, VisionPipeline
from stream.types import VideoFrame

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
    agg = Aggregator(1.0 / fps, config.analyze.max_gap_s, pipeline.emotion.supported)
    best: dict[int, tuple[float, bytes]] = {}
    stage_sum: dict[str, float] = {}
    frames = 0
    error = ""
    t_start = time.perf_counter()
    source: Iterable[VideoFrame] = read_frames(path, fps)
    if progress is not None:
        source = progress(source, info)
    try:
        for frame in source:
            result: FrameResult = pipeline.process(frame)
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
    )


def with_fps(config: Config, fps: float | None) -> Config:
    """Config with `analyze.fps` replaced (validated)."""
    return (
        config
        if fps is None
        else dataclasses.replace(config, analyze=dataclasses.replace(config.analyze, fps=fps))
    )
