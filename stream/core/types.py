"""Interchange types between stages: one validated type per concept."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: BGR uint8 pixels and its media time in seconds."""

    image: U8
    t: float
    index: int = 0

    def __post_init__(self) -> None:
        img = self.image
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(
                f"VideoFrame.image must be HxWx3 uint8 BGR, got {img.shape} {img.dtype}"
            )
        if not np.isfinite(self.t):
            raise ValueError("VideoFrame.t must be finite")

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class FaceDetections:
    """Faces in one frame, in that frame's pixel coordinates.

    Attributes:
        boxes: [N, 4] float32 x1, y1, x2, y2.
        scores: [N] float32 detector confidence in [0, 1].
        landmarks: [N, 5, 2] float32: eye (image-left), eye (image-right), nose tip,
            mouth corner (image-left), mouth corner (image-right).
        track_ids: [N] int64 identity per face; -1 where not yet assigned.
    """

    boxes: F32
    scores: F32
    landmarks: F32
    track_ids: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4):
            raise ValueError(f"boxes must be [N, 4], got {self.boxes.shape}")
        if self.scores.shape != (n,):
            raise ValueError(f"scores must be [{n}], got {self.scores.shape}")
        if self.landmarks.shape != (n, 5, 2):
            raise ValueError(f"landmarks must be [{n}, 5, 2], got {self.landmarks.shape}")
        if len(self.track_ids) == 0 and n:
            object.__setattr__(self, "track_ids", np.full(n, -1, dtype=np.int64))
        if self.track_ids.shape != (n,):
            raise ValueError(f"track_ids must be [{n}], got {self.track_ids.shape}")
        if n and not (np.isfinite(self.boxes).all() and np.isfinite(self.landmarks).all()):
            raise ValueError("boxes and landmarks must be finite")
        if n and bool(np.any(self.boxes[:, 2:] < self.boxes[:, :2])):
            raise ValueError("boxes must have x2 >= x1 and y2 >= y1")

    @classmethod
    def empty(cls) -> FaceDetections:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        )

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> FaceDetections:
        """Return the faces at `index` (integer indices or a boolean mask)."""
        return FaceDetections(
            self.boxes[index], self.scores[index], self.landmarks[index], self.track_ids[index]
        )

    def with_track_ids(self, ids: I64) -> FaceDetections:
        return FaceDetections(self.boxes, self.scores, self.landmarks, ids.astype(np.int64))

    @property
    def sizes(self) -> F32:
        """Shorter side of each box in pixels."""
        wh = self.boxes[:, 2:] - self.boxes[:, :2]
        return np.asarray(wh.min(axis=1), dtype=np.float32)


@dataclass(frozen=True)
class EmotionScores:
    """Expression probabilities per face, in canonical label order (see stream.core.labels).

    Attributes:
        probs: [N, 8] float32, rows sum to 1 over the supported labels, 0 elsewhere.
        supported: [8] bool, labels the models can output (contempt is False for 7-class models).
        valence_arousal: [N, 2] float32 in [-1, 1].
        va_estimated: True when valence/arousal come from the circumplex table, False when a
            model regressed them.
    """

    probs: F32
    supported: npt.NDArray[np.bool_]
    valence_arousal: F32
    va_estimated: bool = True

    def __post_init__(self) -> None:
        n = len(self.probs)
        if self.probs.shape != (n, 8):
            raise ValueError(f"probs must be [N, 8], got {self.probs.shape}")
        if self.supported.shape != (8,):
            raise ValueError("supported must be [8]")
        if self.valence_arousal.shape != (n, 2):
            raise ValueError(f"valence_arousal must be [{n}, 2], got {self.valence_arousal.shape}")

    def __len__(self) -> int:
        return len(self.probs)


@dataclass(frozen=True)
class MediaInfo:
    """What a source holds (a file, or a live session named by `path`)."""

    path: Path
    kind: str  # "video", "image", or "live"
    width: int
    height: int
    duration: float  # seconds; 0 for images
    fps: float  # nominal (average) frame rate; 0 for images
    codec: str
    has_audio: bool


@dataclass(frozen=True)
class FaceSample:
    """What one analysed frame says about one face."""

    number: int
    label: str
    confidence: float
    probs: F32  # smoothed [8]
    raw_probs: F32  # model output [8]
    valence_arousal: F32  # smoothed [2]
    box: tuple[float, float, float, float]  # normalised x1, y1, x2, y2
