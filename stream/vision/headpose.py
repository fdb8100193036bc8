"""Head pose per face: yaw, pitch and roll in degrees.

Sign convention (as seen in the image; the person's own left/right are the other way round in
an unmirrored camera picture):

- yaw > 0: the face turns toward the image's right; yaw = 0 faces the camera's axis.
- pitch > 0: the face tilts up (chin up); pitch < 0 looks down.
- roll > 0: the head tilts clockwise in the image (its top toward the image's right).

A horizontally mirrored picture flips the signs of yaw and roll and keeps pitch.

Two estimates:

- `PointPose`: cheap (about 0.1 ms), from the detector's five points, fitted with a perspective
  solve to the same five points of MediaPipe's canonical face; used on every analysed frame.
- `LandmarkPose`: whenever the 478 landmarks of facial actions are computed, MediaPipe's own
  face-geometry fit (canonical face, its Procrustes landmark weights, a perspective camera of
  63 degrees vertical field of view), ported from mediapipe/modules/face_geometry.

`HeadPoseTracker` joins them per face in media time: the point estimate is calibrated to the
landmark fit (a per-face linear map learnt from the pairs seen so far) and smoothed.

Angles use the rotation R that maps the canonical face's axes (x toward the image's right of
a frontal face, y up, z out of the face toward the camera) to the camera's (x right, y up, z
toward the viewer), decomposed as R = Ry(yaw) Rx(-pitch) Rz(-roll).
"""

from __future__ import annotations

import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from stream.core.protobuf import Field, fields, varint
from stream.core.types import F32

F64 = npt.NDArray[np.float64]

GEOMETRY_MEMBER = "geometry_pipeline_metadata_landmarks.binarypb"
#: MediaPipe Face Landmarker's default camera (face_geometry environment).
VERTICAL_FOV_DEG = 63.0
NEAR = 1.0


# --------------------------------------------------------------------------- angles


def rotation(yaw: float, pitch: float, roll: float) -> F64:
    """The rotation of a head at these angles (degrees), R = Ry(yaw) Rx(-pitch) Rz(-roll)."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return np.asarray(ry @ rx @ rz, np.float64)


def angles(r: F64) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a head rotation (camera: x right, y up, z to viewer)."""
    f = r[:, 2]
    yaw = math.atan2(float(f[0]), float(f[2]))
    pitch = math.asin(max(-1.0, min(1.0, float(f[1]))))
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    m = rx.T @ ry.T @ r
    roll = -math.atan2(float(m[1, 0]), float(m[0, 0]))
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


@dataclass(frozen=True)
class HeadPose:
    """One head-pose estimate (degrees, the module's sign convention)."""

    yaw: float
    pitch: float
    roll: float
    source: str  # "landmarks" (478-point fit), "points" (5 detector points) or "smoothed"

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.yaw, self.pitch, self.roll)


# --------------------------------------------------------------------------- canonical face


def _floats(items: list[Field], num: int) -> list[float]:
    out: list[float] = []
    for n, wt, v, _ in items:
        if n != num:
            continue
        assert isinstance(v, memoryview)
        if wt == 5:
            out.append(struct.unpack("<f", v)[0])
        elif wt == 2:  # packed
            out.extend(struct.unpack(f"<{len(v) // 4}f", v))
    return out


def _uints(items: list[Field], num: int) -> list[int]:
    out: list[int] = []
    for n, wt, v, _ in items:
        if n != num:
            continue
        if wt == 0:
            assert isinstance(v, int)
            out.append(v)
        elif wt == 2:  # packed varints
            assert isinstance(v, memoryview)
            i = 0
            while i < len(v):
                x, i = varint(v, i)
                out.append(x)
    return out


@dataclass(frozen=True)
class CanonicalFace:
    """MediaPipe's canonical face (metric units, centimetres) and its Procrustes weights.

    Attributes:
        vertices: [468, 3] x (toward the image's right of a frontal face), y up, z to camera.
        uv: [468, 2] texture coordinates.
        triangles: [T, 3] vertex indices.
        weights: [468] Procrustes landmark weights (zero outside the basis).
    """

    vertices: F64
    uv: F64
    triangles: npt.NDArray[np.int64]
    weights: F64

    @classmethod
    def from_binarypb(cls, data: bytes) -> CanonicalFace:
        """Parse a `geometry_pipeline_metadata` protobuf (mediapipe face_geometry)."""
        top = fields(data)
        mesh = next(v for n, _, v, _ in top if n == 1)
        assert isinstance(mesh, memoryview)
        mf = fields(mesh)
        vb = np.array(_floats(mf, 3), np.float64).reshape(-1, 5)
        tri = np.array(_uints(mf, 4), np.int64).reshape(-1, 3)
        weights = np.zeros(len(vb), np.float64)
        for n, _, v, _ in top:
            if n == 2:
                assert isinstance(v, memoryview)
                ref = fields(v)
                ids = _uints(ref, 1)
                w = _floats(ref, 2)
                weights[ids[0] if ids else 0] = w[0] if w else 0.0
        if len(vb) != 468 or not weights.any():
            raise ValueError(f"unexpected face geometry metadata ({len(vb)} vertices)")
        return cls(vb[:, :3].copy(), vb[:, 3:].copy(), tri, weights)

    @classmethod
    def from_task(cls, path: Path) -> CanonicalFace:
        """Read it from MediaPipe's `face_landmarker.task` bundle (a zip).

        Raises:
            ValueError: the file is not such a bundle.
        """
        try:
            with zipfile.ZipFile(path) as z:
                data = z.read(GEOMETRY_MEMBER)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise ValueError(f"{path}: no face geometry in it ({exc})") from None
        return cls.from_binarypb(data)


# --------------------------------------------------------------------------- landmark fit


def procrustes(src: F64, dst: F64, w: F64) -> tuple[F64, F64, float]:
    """Weighted similarity fit dst ~ s R src + t; returns (R, t, s). src, dst: [3, N]."""
    tw = float(w.sum())
    cs = (src * w).sum(axis=1) / tw
    cd = (dst * w).sum(axis=1) / tw
    a = (src - cs[:, None]) * np.sqrt(w)
    b = (dst - cd[:, None]) * np.sqrt(w)
    u, _, vt = np.linalg.svd(b @ a.T)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1.0, 1.0, d]) @ vt
    s = float(((r @ a) * b).sum() / max((a * a).sum(), 1e-12))
    return r, cd - s * r @ cs, s


class LandmarkPose:
    """Head pose from 478 (or 468) face landmarks, as MediaPipe's face geometry pipeline.

    Args:
        face: the canonical face and its Procrustes weights.
        vertical_fov_deg: the camera's assumed vertical field of view.
    """

    def __init__(self, face: CanonicalFace, vertical_fov_deg: float = VERTICAL_FOV_DEG) -> None:
        if not 10 <= vertical_fov_deg <= 150:
            raise ValueError(f"vertical_fov_deg must be in [10, 150], got {vertical_fov_deg}")
        self.face = face
        self.fov = vertical_fov_deg
        self._src = face.vertices.T.copy()
        self._w = face.weights

    def _scale(self, pts: F64) -> float:
        return procrustes(self._src, pts, self._w)[2]

    def matrix(self, landmarks: F32, width: int, height: int) -> F64:
        """The 4x4 face transform (canonical face -> metric camera space), as MediaPipe's."""
        return self.fit(landmarks, width, height)[0]

    def fit(self, landmarks: F32, width: int, height: int) -> tuple[F64, F64]:
        """(4x4 face transform, [3, 468] landmarks in metric camera space)."""
        h_near = 2 * NEAR * math.tan(math.radians(self.fov) / 2)
        w_near = width * h_near / height
        lm = np.asarray(landmarks[:468], np.float64)
        p = np.empty((3, 468))
        p[0] = lm[:, 0] / width * w_near - w_near / 2
        p[1] = (1.0 - lm[:, 1] / height) * h_near - h_near / 2
        p[2] = lm[:, 2] / width * w_near
        depth_offset = float(p[2].mean())
        q = p.copy()
        q[2] *= -1
        s1 = self._scale(q)
        q = p.copy()
        q[2] = (q[2] - depth_offset + NEAR) / s1
        q[0] *= q[2] / NEAR
        q[1] *= q[2] / NEAR
        q[2] *= -1
        s2 = self._scale(q)
        q = p.copy()
        q[2] = (q[2] - depth_offset + NEAR) / (s1 * s2)
        q[0] *= q[2] / NEAR
        q[1] *= q[2] / NEAR
        q[2] *= -1
        r, t, s = procrustes(self._src, q, self._w)
        m = np.eye(4)
        m[:3, :3] = s * r
        m[:3, 3] = t
        return m, q

    def __call__(self, landmarks: F32, width: int, height: int) -> HeadPose:
        """The head pose of one face's landmarks (image pixels x, y; z as FaceActionModel's)."""
        m = self.matrix(landmarks, width, height)
        r = m[:3, :3] / np.linalg.norm(m[:3, 0])
        return HeadPose(*angles(r), source="landmarks")


# --------------------------------------------------------------------------- 5-point fit

#: Canonical vertices standing for the detector's points: eye centres (mean of the corners),
#: nose tip, mouth corners; image-left first, as YuNet orders them for a frontal face.
_EYE_A = (33, 133, 159, 145)
_EYE_B = (263, 362, 386, 374)
_NOSE = 4
_MOUTH = (61, 291)


def five_point_model(face: CanonicalFace) -> F64:
    """[5, 3] canonical positions of the detector's five points."""
    v = face.vertices
    pts = [v[list(_EYE_A)].mean(0), v[list(_EYE_B)].mean(0), v[_NOSE], v[_MOUTH[0]], v[_MOUTH[1]]]
    out = np.array(pts, np.float64)
    if out[0, 0] > out[1, 0]:  # keep image-left first
        out[[0, 1]] = out[[1, 0]]
        out[[3, 4]] = out[[4, 3]]
    return out


class PointPose:
    """Cheap head pose from the detector's five points (eyes, nose tip, mouth corners).

    A perspective fit (OpenCV solvePnP, same 63-degree camera as `LandmarkPose`) of the five
    canonical points; yaw and pitch are coarse (the five points barely constrain depth), so
    `HeadPoseTracker` calibrates them to the landmark fit per face.
    """

    def __init__(self, face: CanonicalFace, vertical_fov_deg: float = VERTICAL_FOV_DEG) -> None:
        if not 10 <= vertical_fov_deg <= 150:
            raise ValueError(f"vertical_fov_deg must be in [10, 150], got {vertical_fov_deg}")
        m = five_point_model(face)
        # OpenCV object frame: y down, z away from the camera
        self._obj = np.ascontiguousarray(m * np.array([1.0, -1.0, -1.0]), np.float64)
        self._eye_dist = float(np.linalg.norm(m[1] - m[0]))
        self.fov = vertical_fov_deg

    def __call__(self, points: F32, width: int, height: int) -> HeadPose:
        """The head pose of five detector points [5, 2] (image pixels, YuNet's order)."""
        pts = np.ascontiguousarray(points, np.float64).reshape(5, 1, 2)
        f = height / 2 / math.tan(math.radians(self.fov) / 2)
        cam = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)
        eye_px = float(np.linalg.norm(pts[1, 0] - pts[0, 0]))
        z0 = f * self._eye_dist / max(eye_px, 1.0)
        c = pts[:, 0].mean(0)
        t0 = np.array([(c[0] - width / 2) * z0 / f, (c[1] - height / 2) * z0 / f, z0])
        r0 = np.zeros(3)
        roll0 = math.atan2(float(pts[1, 0, 1] - pts[0, 0, 1]), float(pts[1, 0, 0] - pts[0, 0, 0]))
        r0[2] = roll0
        _, rvec, _ = cv2.solvePnP(
            self._obj,
            pts,
            cam,
            None,
            rvec=r0.reshape(3, 1),
            tvec=t0.reshape(3, 1),
            useExtrinsicGuess=True,
            flags=cv2.SOLVEPNP_ITERATIVE,
        )
        rcv, _ = cv2.Rodrigues(rvec)
        s = np.diag([1.0, -1.0, -1.0])
        return HeadPose(*angles(np.asarray(s @ rcv @ s, np.float64)), source="points")


# --------------------------------------------------------------------------- tracking

#: Landmarks followed by optical flow between landmark passes: eye corners, nose, nasal bridge,
#: inner brows, cheeks beside the nose and under the eyes, and the chin (it moves with the jaw,
#: but without points that far apart a nod's foreshortening is missed: against MediaPipe,
#: pitch changes between passes came out at 0.17-0.64 of the true ones without the cheeks and
#: chin, 0.82-0.98 with them, on three clips); not the lips or lids.
FLOW_POINTS = (
    *(33, 133, 263, 362, 1, 4, 5, 6, 168, 195, 98, 327, 2, 55, 285, 129, 358, 197),
    *(50, 280, 117, 346, 152, 199, 175),
)
_FLOW_SIDE = 160.0  # the tracked region is scaled so that its side is at most this (pixels)
_GL = np.diag([1.0, -1.0, -1.0])  # camera GL (y up, z to viewer) <-> OpenCV (y down, z ahead)


def _camera(width: int, height: int, fov: float) -> F64:
    f = height / 2 / math.tan(math.radians(fov) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)


#: A face followed onto a frame: (pose, points, rvec, tvec, region, its grey pixels).
_Flowed = tuple["HeadPose", F32, F64, F64, tuple[int, int, int, int, float], npt.NDArray[np.uint8]]


@dataclass
class _Track:
    """One face's state: smoothing, the last landmark anchor and the flow-followed points."""

    t: float
    smoothed: F64
    raw: HeadPose
    anchor: F64 | None = None  # the angles of the last landmark fit
    anchor_points: F64 | None = None  # the point fit's angles at that time
    model: F64 | None = None  # [K, 3] this person's FLOW_POINTS in the canonical frame
    pts: F32 | None = None  # [K, 2] their image positions on the last frame
    rvec: F64 | None = None
    tvec: F64 | None = None
    grey: npt.NDArray[np.uint8] | None = None  # the tracked region of the last frame
    roi: tuple[int, int, int, int, float] = (0, 0, 0, 0, 1.0)  # x0, y0, x1, y1, scale


class HeadPoseTracker:
    """Per-face head pose in media time.

    On a frame with landmarks, MediaPipe's fit (`LandmarkPose`); it also anchors the face:
    a few rigid landmarks of this person (in the canonical frame) are then followed by optical
    flow from frame to frame (when the frame is given) and the pose is solved from them
    (perspective, 63-degree camera), as MediaPipe tracks between detections. Without a frame,
    or when the flow loses the face, the 5-point estimate's change since the anchor is added
    to the anchor (half of it: the point fit overstates changes). The result is exponentially
    smoothed in media time (`tau_s`).

    Args:
        points: the 5-point estimator.
        landmarks: the landmark fit.
        tau_s: smoothing time constant in media time (0: none).
        reset_after_s: a face unseen this long starts afresh.
        point_gain: the share of the point fit's change added to the anchor.
    """

    def __init__(
        self,
        points: PointPose,
        landmarks: LandmarkPose,
        tau_s: float = 0.1,
        reset_after_s: float = 2.0,
        point_gain: float = 0.5,
    ) -> None:
        if tau_s < 0 or reset_after_s <= 0 or not 0 <= point_gain <= 1:
            raise ValueError("tau_s must be >= 0, reset_after_s > 0, point_gain in [0, 1]")
        self.points = points
        self.landmarks = landmarks
        self.tau_s = tau_s
        self.reset_after_s = reset_after_s
        self.point_gain = point_gain
        self._ids = np.array(FLOW_POINTS)
        self._tracks: dict[int, _Track] = {}
        # The grey copy of the last frame seen (its time and array), made once for its faces.
        self._frame: tuple[float, npt.NDArray[np.uint8]] | None = None
        self._frame_grey: npt.NDArray[np.uint8] = np.zeros((0, 0), np.uint8)
        # Flows followed ahead (`prepare`): (time, frame, face -> (track, its points, result)).
        self._prepared: tuple[float, object, dict[int, tuple[_Track, F32 | None, _Flowed | None]]]
        self._prepared = (math.nan, None, {})

    @classmethod
    def from_task(cls, path: Path, tau_s: float = 0.1) -> HeadPoseTracker:
        """Both estimators over the canonical face in MediaPipe's `face_landmarker.task`."""
        face = CanonicalFace.from_task(path)
        return cls(PointPose(face), LandmarkPose(face), tau_s)

    def update(
        self,
        face: int,
        t: float,
        points: F32,
        width: int,
        height: int,
        landmarks: F32 | None = None,
        image: npt.NDArray[np.uint8] | None = None,
        grey: npt.NDArray[np.uint8] | None = None,
    ) -> HeadPose:
        """The smoothed pose of `face` at media time `t`.

        Args:
            points: the detector's five points [5, 2] on this frame.
            landmarks: [478, 3] this frame's landmarks when computed on it, else None.
            image: this frame (BGR or RGB uint8): lets the flow follow the face between
                landmark passes. Give it on every analysed frame or never.
        """
        tr = self._tracks.get(face)
        if tr is not None and (t - tr.t > self.reset_after_s or t < tr.t):
            tr = None
        if image is not None and (
            self._frame is None or self._frame[1] is not image or self._frame[0] != t
        ):
            self._frame = (t, image)  # a new frame (a reused buffer comes with a new time)
            self._frame_grey = (
                grey
                if grey is not None
                else np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8)
            )
        raw: HeadPose | None = None
        p: HeadPose | None = None  # the 5-point fit, only where it is needed
        if landmarks is not None:
            p = self.points(points, width, height)
            raw = self._anchor(tr, t, p, landmarks, width, height, image)
        else:
            if tr is not None and tr.model is not None and image is not None:
                raw = self._flow(face, tr, t, image, width, height)
            if raw is None:
                p = self.points(points, width, height)
                if tr is not None and tr.anchor is not None and tr.anchor_points is not None:
                    d = np.array(p.as_tuple()) - tr.anchor_points
                    v = tr.anchor + self.point_gain * d
                    raw = HeadPose(float(v[0]), float(v[1]), float(v[2]), "points")
                else:
                    raw = p
                if tr is not None:
                    tr.model = None  # the flow has lost the face until the next anchor
        assert raw is not None
        v = np.array(raw.as_tuple())
        if tr is None:
            tr = _Track(t, v, raw)
            if landmarks is not None and p is not None:
                self._anchor(tr, t, p, landmarks, width, height, image)
        elif self.tau_s > 0:
            alpha = 1.0 - math.exp(-(t - tr.t) / self.tau_s)
            tr.smoothed = tr.smoothed + alpha * (v - tr.smoothed)
        else:
            tr.smoothed = v
        tr.t, tr.raw = t, raw
        self._tracks[face] = tr
        s = tr.smoothed
        return HeadPose(float(s[0]), float(s[1]), float(s[2]), source="smoothed")

    def _anchor(
        self,
        tr: _Track | None,
        t: float,
        p: HeadPose,
        landmarks: F32,
        width: int,
        height: int,
        image: npt.NDArray[np.uint8] | None,
    ) -> HeadPose:
        m, q = self.landmarks.fit(landmarks, width, height)
        sr = m[:3, :3]
        s = float(np.linalg.norm(sr[:, 0]))
        r = sr / s
        pose = HeadPose(*angles(r), source="landmarks")
        if tr is None:
            return pose
        tr.anchor = np.array(pose.as_tuple())
        tr.anchor_points = np.array(p.as_tuple())
        if image is None:
            tr.model = None
            return pose
        tr.model = ((r.T @ (q[:, self._ids] - m[:3, 3:4])) / s).T.copy()
        tr.pts = np.asarray(landmarks[self._ids, :2], np.float32).copy()
        rcv = _GL @ r
        tr.rvec = np.asarray(cv2.Rodrigues(rcv)[0], np.float64).reshape(3)
        tr.tvec = (_GL @ m[:3, 3]).reshape(3)
        self._keep_region(tr, image)
        return pose

    def _keep_region(self, tr: _Track, image: npt.NDArray[np.uint8]) -> None:
        """Remember the grey region around the followed points for the next frame's flow."""
        assert tr.pts is not None
        tr.roi, tr.grey = self._region(tr.pts, image.shape[:2], self._frame_grey)

    @staticmethod
    def _region(
        pts: F32, shape: tuple[int, ...], frame_grey: npt.NDArray[np.uint8]
    ) -> tuple[tuple[int, int, int, int, float], npt.NDArray[np.uint8]]:
        """The region around `pts` (x0, y0, x1, y1, scale) and its grey pixels."""
        lo, hi = pts.min(0), pts.max(0)
        side = float(max(hi - lo)) * 2.0 + 8
        c = (lo + hi) / 2
        h, w = shape[:2]
        x0, y0 = max(int(c[0] - side / 2), 0), max(int(c[1] - side / 2), 0)
        x1, y1 = min(int(c[0] + side / 2) + 1, w), min(int(c[1] + side / 2) + 1, h)
        k = min(1.0, _FLOW_SIDE / max(x1 - x0, y1 - y0, 1))
        roi = (x0, y0, x1, y1, k)
        return roi, HeadPoseTracker._grey(roi, frame_grey)

    @staticmethod
    def _grey(
        roi: tuple[int, int, int, int, float], frame_grey: npt.NDArray[np.uint8]
    ) -> npt.NDArray[np.uint8]:
        """The region of the frame in grey, scaled by the roi's factor (the frame is converted
        once for all its faces: the same pixels as converting each region)."""
        x0, y0, x1, y1, k = roi
        g = frame_grey[y0:y1, x0:x1]
        if k < 1.0:
            size = (max(round((x1 - x0) * k), 1), max(round((y1 - y0) * k), 1))
            return np.asarray(cv2.resize(g, size, interpolation=cv2.INTER_LINEAR), np.uint8)
        return np.ascontiguousarray(g)

    def prepare(
        self,
        t: float,
        image: npt.NDArray[np.uint8],
        grey: npt.NDArray[np.uint8],
        faces: list[int],
    ) -> None:
        """Follow the faces' points onto this frame ahead of `update` (e.g. in a helper thread
        while the frame's landmarks are computed: OpenCV releases the GIL). `update` on this
        frame uses the results where the face's state is still the one followed here (the
        same numbers as following it then); nothing else changes. `grey` is the frame's
        full-size grey copy, as given to `update`."""
        h, w = image.shape[:2]
        out: dict[int, tuple[_Track, F32 | None, _Flowed | None]] = {}
        for face in faces:
            tr = self._tracks.get(face)
            if tr is None or tr.model is None or t - tr.t > self.reset_after_s or t < tr.t:
                continue
            out[face] = (tr, tr.pts, self._solve(tr, grey, w, h))
        self._prepared = (t, image, out)

    def _flow(
        self, face: int, tr: _Track, t: float, image: npt.NDArray[np.uint8], width: int, height: int
    ) -> HeadPose | None:
        """Follow the anchored points onto `image` and solve the pose; None when lost."""
        prepared = self._prepared
        done = prepared[2].get(face) if prepared[0] == t and prepared[1] is image else None
        if done is not None and done[0] is tr and done[1] is tr.pts:
            flowed = done[2]
        else:
            flowed = self._solve(tr, self._frame_grey, width, height)
        if flowed is None:
            return None
        pose, tr.pts, tr.rvec, tr.tvec, tr.roi, tr.grey = flowed
        return pose

    def _solve(
        self, tr: _Track, frame_grey: npt.NDArray[np.uint8], width: int, height: int
    ) -> _Flowed | None:
        """The track's points followed onto the frame and the pose solved from them: (pose,
        points, rvec, tvec, region, its grey pixels); None when lost. Changes nothing."""
        assert tr.pts is not None and tr.grey is not None and tr.model is not None
        x0, y0, x1, y1, k = tr.roi
        if frame_grey.shape[0] < y1 or frame_grey.shape[1] < x1:
            return None
        cur = self._grey(tr.roi, frame_grey)
        p0 = ((tr.pts - np.array([x0, y0], np.float32)) * k).reshape(-1, 1, 2).astype(np.float32)
        p1, status, _ = cv2.calcOpticalFlowPyrLK(
            tr.grey, cur, p0, None, winSize=(15, 15), maxLevel=3
        )
        ok = status.reshape(-1).astype(bool)
        if ok.sum() < 6:
            return None
        new = (p1.reshape(-1, 2) / k + np.array([x0, y0], np.float32)).astype(np.float32)
        cam = _camera(width, height, self.landmarks.fov)
        good, rvec, tvec = cv2.solvePnP(
            tr.model[ok],
            new[ok].astype(np.float64),
            cam,
            None,
            rvec=tr.rvec.copy() if tr.rvec is not None else None,
            tvec=tr.tvec.copy() if tr.tvec is not None else None,
            useExtrinsicGuess=True,
            flags=cv2.SOLVEPNP_ITERATIVE,
        )
        if not good or not np.isfinite(rvec).all() or float(tvec[2, 0]) <= 0:
            return None
        proj = cv2.projectPoints(tr.model, rvec, tvec, cam, None)[0].reshape(-1, 2)
        err = np.linalg.norm(proj[ok] - new[ok], axis=1)
        size = float(np.ptp(proj, axis=0).max())
        if float(np.median(err)) > 0.05 * max(size, 1.0):
            return None  # the points no longer move as one head
        new[~ok] = proj[~ok]
        roi, region = self._region(new, (height, width), frame_grey)
        r = _GL @ np.asarray(cv2.Rodrigues(rvec)[0], np.float64)
        pose = HeadPose(*angles(r), source="flow")
        rv = np.asarray(rvec, np.float64).reshape(3)
        return pose, new, rv, np.asarray(tvec, np.float64).reshape(3), roi, region

    def raw(self, face: int) -> HeadPose | None:
        """The last unsmoothed estimate of `face` (its `source` says which fit)."""
        tr = self._tracks.get(face)
        return None if tr is None else tr.raw

    def forget(self, face: int) -> None:
        self._tracks.pop(face, None)

    def reset(self) -> None:
        self._tracks.clear()
        self._frame = None
        self._prepared = (math.nan, None, {})
