"""Head-pose references and test clips: MediaPipe's own transform on real clips, our pose
series on the same frames, and real face photos turned in 3D over time (known nods/shakes).

MediaPipe needs opencv-contrib-python, which clashes with this project's OpenCV, so it runs in
its own venv (`EMOTION_STREAM_MEDIAPIPE_PYTHON`, else the venv bench/bench_mediapipe.py makes,
else /tmp/mpvenv); callers skip when none is there.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from stream.core.types import F32, U8, VideoFrame
from stream.vision.blendshapes import FaceActionModel
from stream.vision.detect import YuNetDetector
from stream.vision.headpose import CanonicalFace, HeadPoseTracker, angles, rotation

from .conftest import MODELS, VIDEO

TASK = MODELS / "face_landmarker.task"

_CHILD = r"""
import json, sys
import cv2, mediapipe as mp
from mediapipe.tasks.python import BaseOptions
from mediapipe.tasks.python.vision import FaceLandmarker, FaceLandmarkerOptions, RunningMode
clip, model, mirror = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
opts = FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=model),
    running_mode=RunningMode.VIDEO, num_faces=1, output_facial_transformation_matrixes=True)
out = []
with FaceLandmarker.create_from_options(opts) as lm:
    cap = cv2.VideoCapture(clip)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    i = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if mirror:
            bgr = cv2.flip(bgr, 1)
        img = mp.Image(image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        r = lm.detect_for_video(img, int(i * 1000 / fps))
        m = r.facial_transformation_matrixes
        out.append([float(v) for v in m[0].reshape(-1)] if len(m) else None)
        i += 1
json.dump(out, sys.stdout)
"""


def mediapipe_python() -> str | None:
    """A python with `mediapipe` installed, or None."""
    given = os.environ.get("EMOTION_STREAM_MEDIAPIPE_PYTHON")
    candidates = [given] if given else []
    candidates += [
        str(Path(tempfile.gettempdir()) / "emotion-stream-mediapipe-venv" / "bin" / "python"),
        "/tmp/mpvenv/bin/python",
    ]
    for c in candidates:
        if c and Path(c).is_file():
            return c
    return None


def mediapipe_poses(
    python: str, clip: Path, mirror: bool = False
) -> list[tuple[float, ...] | None]:
    """(yaw, pitch, roll) of MediaPipe's facial transformation matrix on every frame."""
    out = subprocess.run(
        [python, "-c", _CHILD, str(clip), str(TASK), "1" if mirror else "0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    poses: list[tuple[float, ...] | None] = []
    for m in json.loads(out.stdout):
        if m is None:
            poses.append(None)
            continue
        mat = np.array(m, np.float64).reshape(4, 4)
        r = mat[:3, :3]
        poses.append(angles(r / np.linalg.norm(r[:, 0])))
    return poses


def frames(clip: Path, mirror: bool = False, fps: float = 0.0) -> Iterator[tuple[int, float, U8]]:
    """(index, media time, BGR image) of the frames, decoded as MediaPipe's child does; with
    `fps`, only frames at least 1/fps apart (as `analyze --fps`)."""
    cap = cv2.VideoCapture(str(clip))
    rate = cap.get(cv2.CAP_PROP_FPS) or 30.0
    i = 0
    next_t = 0.0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        t = i / rate
        if fps <= 0 or t >= next_t - 1e-6:
            next_t = t + 1.0 / fps if fps > 0 else 0.0
            img = cv2.flip(bgr, 1) if mirror else bgr
            yield i, t, np.asarray(img, np.uint8)
        i += 1
    cap.release()


@dataclass
class PoseSeries:
    """Our estimates on every frame of a clip: the landmark fit, the point fit, the tracker."""

    landmarks: list[tuple[float, ...] | None]
    points: list[tuple[float, ...] | None]
    tracked: list[tuple[float, ...] | None]
    t: list[float]
    index: list[int]


def largest(det: object) -> int:
    boxes = det.boxes  # type: ignore[attr-defined]
    return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))


def our_poses(
    detector: YuNetDetector,
    actions: FaceActionModel,
    tracker: HeadPoseTracker,
    images: Iterator[tuple[int, float, U8]],
    landmark_every_s: float = 0.5,
) -> PoseSeries:
    """Head pose of the largest face on every frame: landmark fit on every frame (for the
    comparison) and the tracker fed landmarks only every `landmark_every_s` (as the product)."""
    s = PoseSeries([], [], [], [], [])
    prior: tuple[F32, F32] | None = None
    next_lm = 0.0
    for i, t, img in images:
        s.t.append(t)
        s.index.append(i)
        det = detector(VideoFrame(img, t, i))
        if len(det) == 0:
            s.landmarks.append(None)
            s.points.append(None)
            s.tracked.append(None)
            prior = None
            continue
        k = largest(det)
        box, pts = det.boxes[k], det.landmarks[k]
        fa = actions(img, box, pts[:2], prior, bgr=True)
        prior = (box, fa.landmarks)
        h, w = img.shape[:2]
        s.landmarks.append(tracker.landmarks(fa.landmarks, w, h).as_tuple())
        s.points.append(tracker.points(pts, w, h).as_tuple())
        use = t >= next_lm
        if use:
            next_lm = t + landmark_every_s
        p = tracker.update(1, t, pts, w, h, fa.landmarks if use else None, img)
        s.tracked.append(p.as_tuple())
    return s


def agreement(
    ours: list[tuple[float, ...] | None], ref: list[tuple[float, ...] | None], axis: int
) -> tuple[float, float, int]:
    """(Pearson correlation, mean absolute error in degrees, frames) over frames both have."""
    pairs = [
        (a[axis], b[axis])
        for a, b in zip(ours, ref, strict=False)
        if a is not None and b is not None
    ]
    if len(pairs) < 3:
        return float("nan"), float("nan"), len(pairs)
    x, y = np.array(pairs).T
    corr = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
    return corr, float(np.mean(np.abs(x - y))), len(pairs)


# --------------------------------------------------------------------------- 3D turned photos


class HeadRenderer:
    """Turns a real face photo in 3D: its 478 landmarks (with depth) become a mesh over the
    canonical triangles, rotated about the head's centre and drawn back triangle by triangle
    (far ones first); the rest of the picture stays as it is.

    Args:
        image: the BGR photo.
        landmarks: its [478, 3] landmarks (image pixels; z as FaceActionModel's).
        face: the canonical face (for the triangles).
    """

    def __init__(self, image: U8, landmarks: F32, face: CanonicalFace) -> None:
        self.image = image
        self.lm = np.asarray(landmarks[:468], np.float64)
        self.tri = face.triangles
        c = self.lm[:, :2].mean(0)
        self.centre = np.array([c[0], c[1], float(self.lm[:, 2].mean())])
        # rotate about a point behind the face (the neck's pivot): half a face height back
        height = float(self.lm[:, 1].max() - self.lm[:, 1].min())
        self.pivot = self.centre + np.array([0.0, 0.25 * height, 0.6 * height])

    def render(self, yaw: float, pitch: float, roll: float = 0.0) -> U8:
        """The photo with the face turned by these angles (degrees, headpose's convention)."""
        # image coordinates (x right, y down, z away) <- camera (x right, y up, z to viewer)
        s = np.diag([1.0, -1.0, -1.0])
        r = s @ rotation(yaw, pitch, roll) @ s
        p = (self.lm - self.pivot) @ r.T + self.pivot
        out = self.image.copy()
        depth = p[self.tri, 2].mean(1)
        for k in np.argsort(-depth):  # far first
            a = self.lm[self.tri[k], :2].astype(np.float32)
            b = p[self.tri[k], :2].astype(np.float32)
            # back-facing triangles (seen from the other side after turning) are skipped
            area = (b[1, 0] - b[0, 0]) * (b[2, 1] - b[0, 1]) - (b[2, 0] - b[0, 0]) * (
                b[1, 1] - b[0, 1]
            )
            area0 = (a[1, 0] - a[0, 0]) * (a[2, 1] - a[0, 1]) - (a[2, 0] - a[0, 0]) * (
                a[1, 1] - a[0, 1]
            )
            if area * area0 <= 0:
                continue
            x, y, w, h = cv2.boundingRect(b)
            if w <= 0 or h <= 0:
                continue
            m = cv2.getAffineTransform(a, b - np.array([x, y], np.float32))
            patch = cv2.warpAffine(
                self.image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
            mask = np.zeros((h, w), np.uint8)
            cv2.fillConvexPoly(
                mask, np.round(b - np.array([x, y], np.float32)).astype(np.int32), (1,)
            )
            x0, y0 = max(x, 0), max(y, 0)
            x1, y1 = min(x + w, out.shape[1]), min(y + h, out.shape[0])
            if x1 <= x0 or y1 <= y0:
                continue
            sub = mask[y0 - y : y1 - y, x0 - x : x1 - x].astype(bool)
            out[y0:y1, x0:x1][sub] = patch[y0 - y : y1 - y, x0 - x : x1 - x][sub]
        return out


@dataclass(frozen=True)
class Gesture:
    """A known head gesture in a composed clip."""

    kind: str  # "nod" or "shake"
    start: float
    end: float
    amplitude: float  # degrees, half the peak-to-peak swing


def script(
    seed: int, seconds: float, fps: float = 10.0
) -> tuple[npt.NDArray[np.float64], list[Gesture]]:
    """A head-motion script: [frames, 3] yaw/pitch/roll over time with nods, shakes, slow
    looks away (not gestures) and stillness, plus the list of gestures in it."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    t = np.arange(n) / fps
    ypr = np.zeros((n, 3))
    base = rng.uniform(-8, 8, 2)
    ypr[:, 0] += base[0]
    ypr[:, 1] += base[1]
    gestures: list[Gesture] = []
    k = 1.0
    while k < seconds - 3:
        what = rng.choice(["nod", "shake", "look", "still"])
        if what in ("nod", "shake"):
            # a shake repeats (2-3 cycles: left, right, left, ...); a nod may be one cycle
            cycles = int(rng.integers(1 if what == "nod" else 2, 4))
            freq = float(rng.uniform(1.2, 2.5))
            amp = float(rng.uniform(5, 12))
            dur = cycles / freq
            m = (t >= k) & (t < k + dur)
            wave = amp * np.sin(2 * math.pi * freq * (t[m] - k))
            # a nod starts downward (pitch < 0), a shake to either side
            ypr[m, 1 if what == "nod" else 0] += -wave if what == "nod" else wave
            gestures.append(Gesture(str(what), k, k + dur, amp))
            k += dur + float(rng.uniform(1.5, 3.0))
        elif what == "look":  # a slow turn away and back (about 2.5 s): not a gesture
            amp = float(rng.uniform(15, 25)) * float(rng.choice([-1, 1]))
            dur = float(rng.uniform(2.5, 4.0))
            m = (t >= k) & (t < k + dur)
            ypr[m, 0] += amp * np.sin(math.pi * (t[m] - k) / dur) ** 2
            k += dur + float(rng.uniform(1.0, 2.0))
        else:
            k += float(rng.uniform(1.5, 3.0))
    ypr += rng.normal(0, 0.3, ypr.shape)  # tremor
    return ypr, gestures


def photo_faces(detector: YuNetDetector, actions: FaceActionModel) -> list[tuple[U8, F32]]:
    """Real single-face frames (BGR, landmarks) to turn: one from each of several clips."""
    picks = [
        ("fer_woman2.mp4", 1.0),
        ("pyfeat_single_face.mp4", 0.5),
        ("fer_test.mp4", 0.5),
        ("pyfeat_WolfgangLanger_Pexels.mp4", 17.0),
    ]
    out = []
    for name, at in picks:
        for _, t, img in frames(VIDEO / name):
            if t >= at:
                det = detector(VideoFrame(img, t))
                if len(det):
                    k = largest(det)
                    fa = actions(img, det.boxes[k], det.landmarks[k][:2], bgr=True)
                    out.append((img, fa.landmarks))
                break
    return out
