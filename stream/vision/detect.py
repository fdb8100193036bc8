"""Face detection with YuNet: frame in, `FaceDetections` out."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from stream.core.config import DetectionConfig
from stream.core.types import F32, FaceDetections, VideoFrame
from stream.models.registry import ModelSpec
from stream.vision.align import frame_interpolation


def nms(boxes: F32, scores: F32, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


class YuNetDetector:
    """YuNet face detector with its anchor-free decode and NMS.

    Args:
        session: an ONNX Runtime session (or anything with the same `run`).
        spec: the model's manifest entry (fixed input size, strides).
        config: thresholds and the largest side the frame is scaled down to.
    """

    def __init__(self, session: Any, spec: ModelSpec, config: DetectionConfig) -> None:
        self.session = session
        self.config = config
        self.spec = spec
        self.input_name = spec.io.input
        self.fixed_size = spec.io.size if spec.io.size != (0, 0) else None
        self.strides = spec.io.strides or (8, 16, 32)
        self._grids: dict[tuple[int, int, int], F32] = {}

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = image.shape[:2]
        if self.fixed_size is not None:
            tw, th = self.fixed_size
            scale = min(tw / w, th / h)
        else:
            scale = min(1.0, self.config.max_side / max(h, w))
            tw = th = 0
        if scale != 1.0:
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            image = cv2.resize(image, (nw, nh), interpolation=frame_interpolation(scale))
        else:
            nh, nw = h, w
        if self.fixed_size is None:
            tw, th = -(-nw // 32) * 32, -(-nh // 32) * 32
        # Written straight into the model's NCHW layout: a transposed HWC canvas was copied
        # once more by onnxruntime to make it contiguous (2.9 MB at 640x384).
        blob = np.zeros((1, 3, th, tw), dtype=np.float32)
        blob[0, :, :nh, :nw] = image.transpose(2, 0, 1)
        return blob, scale

    def _grid(self, h: int, w: int, stride: int) -> F32:
        key = (h, w, stride)
        grid = self._grids.get(key)
        if grid is None:
            rows, cols = h // stride, w // stride
            yy, xx = np.mgrid[0:rows, 0:cols]
            grid = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
            self._grids[key] = grid
        return grid

    def __call__(self, frame: VideoFrame) -> FaceDetections:
        """Detect faces in a frame."""
        blob, scale = self._prepare(frame.image)
        outputs = self.session.run(None, {self.input_name: blob})
        names = [o.name for o in self.session.get_outputs()]
        out = dict(zip(names, outputs, strict=True))
        _, _, ih, iw = blob.shape
        all_boxes, all_scores, all_kps = [], [], []
        thr = self.config.score_threshold
        for s in self.strides:
            cls = out[f"cls_{s}"][0, :, 0]
            obj = out[f"obj_{s}"][0, :, 0]
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            idx = np.nonzero(score >= thr)[0]
            if idx.size == 0:
                continue
            grid = self._grid(ih, iw, s)[idx]
            bbox = out[f"bbox_{s}"][0, idx]
            kps = out[f"kps_{s}"][0, idx].reshape(-1, 5, 2)
            centre = (grid + bbox[:, :2]) * s
            wh = np.exp(bbox[:, 2:4]) * s
            all_boxes.append(np.concatenate([centre - wh / 2, centre + wh / 2], axis=1))
            all_kps.append((kps + grid[:, None, :]) * s)
            all_scores.append(score[idx])
        if not all_boxes:
            return FaceDetections.empty()
        boxes = np.concatenate(all_boxes).astype(np.float32) / scale
        kps_arr = np.concatenate(all_kps).astype(np.float32) / scale
        scores = np.concatenate(all_scores).astype(np.float32)
        keep = nms(boxes, scores, self.config.nms_iou)[: self.config.max_faces]
        boxes, scores, kps_arr = boxes[keep], scores[keep], kps_arr[keep]
        h, w = frame.height, frame.width
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        wh = boxes[:, 2:] - boxes[:, :2]
        ok = wh.min(axis=1) >= self.config.min_face_px
        return FaceDetections(boxes[ok], scores[ok], kps_arr[ok])
