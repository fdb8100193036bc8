"""Moving faces between detections: sparse optical flow on the landmarks."""

from __future__ import annotations

import cv2
import numpy as np

from stream.core.types import U8, FaceDetections
from stream.vision.align import frame_interpolation

_MAX_SIDE = 320


class FlowPropagator:
    """Shifts each face's box and landmarks by the median Lucas-Kanade flow of its landmarks.

    Used on frames where the detector is skipped to stay within the frame budget; identities are
    kept as they were on the last detected frame.
    """

    #: The full-size grey copy of the last frame given to `grey` (head tracking reuses it).
    full: U8 | None = None

    def grey(self, image: U8) -> U8:
        """Downscaled grey copy used for the flow (longer side at most 320 px)."""
        h, w = image.shape[:2]
        s = min(1.0, _MAX_SIDE / max(h, w))
        g = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        self.full = np.asarray(g, dtype=np.uint8)
        if s < 1.0:
            g = cv2.resize(g, (round(w * s), round(h * s)), interpolation=frame_interpolation(s))
        return np.asarray(g, dtype=np.uint8)

    def propagate(
        self, prev_grey: U8, grey: U8, image: U8, faces: FaceDetections
    ) -> FaceDetections:
        """Faces of the previous frame moved onto `image` (unchanged where flow fails).

        Args:
            prev_grey, grey: `self.grey` of the previous and of this frame.
        """
        if len(faces) == 0 or prev_grey.shape != grey.shape:
            return faces
        s = grey.shape[1] / image.shape[1]
        pts = (faces.landmarks.reshape(-1, 1, 2) * s).astype(np.float32)
        new, status, _ = cv2.calcOpticalFlowPyrLK(
            prev_grey, grey, pts, pts.copy(), winSize=(15, 15), maxLevel=2
        )
        ok = status.reshape(len(faces), 5).astype(bool)
        shift = ((new - pts).reshape(len(faces), 5, 2)) / s
        boxes = faces.boxes.copy()
        lms = faces.landmarks.copy()
        h, w = image.shape[:2]
        for i in range(len(faces)):
            if ok[i].sum() < 3:
                continue
            d = np.median(shift[i][ok[i]], axis=0)
            boxes[i] += np.array([d[0], d[1], d[0], d[1]], np.float32)
            lms[i] += d.astype(np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        return FaceDetections(boxes, faces.scores, lms, faces.track_ids)
