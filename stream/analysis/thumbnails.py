"""The sharpest crop of each face of a stream (for reports)."""

from __future__ import annotations

import cv2

from stream.analysis.consolidate import Consolidation
from stream.core.types import VideoFrame
from stream.vision.align import crop_squares
from stream.vision.pipeline import FrameResult

THUMB_PX = 96


class Thumbnails:
    """Keeps each face's best crop so far: detector score times box side (big, clear views)."""

    def __init__(self, px: int = THUMB_PX) -> None:
        if px < 8:
            raise ValueError(f"thumbnail side must be >= 8 px, got {px}")
        self.px = px
        self._best: dict[int, tuple[float, bytes]] = {}  # face -> (quality, JPEG)

    def keep(self, frame: VideoFrame, result: FrameResult) -> None:
        """Take the crops of this frame's faces that beat the best so far."""
        for f in result.faces:
            x1, y1, x2, y2 = f.box
            q = float(f.score) * float(min(x2 - x1, y2 - y1))
            if q > self._best.get(f.number, (-1.0, b""))[0]:
                crop = crop_squares(frame.image, f.box[None], self.px, 1.3)[0]
                ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
                self._best[f.number] = (q, bytes(buf) if ok else b"")

    def renumber(self, c: Consolidation) -> None:
        """Carry the crops over to consolidated numbers (a person keeps the best of theirs)."""
        moved = c.renumbered()
        best: dict[int, tuple[float, bytes]] = {}
        for old, item in sorted(self._best.items(), key=lambda kv: kv[0] not in moved):
            new = moved.get(old, c.number_at(old, -1.0))
            if new not in best or (old in moved and item[0] > best[new][0]):
                best[new] = item
        self._best = best

    def jpegs(self) -> dict[int, bytes]:
        """Face number -> JPEG bytes."""
        return {k: v[1] for k, v in self._best.items()}

    def clear(self) -> None:
        self._best.clear()
