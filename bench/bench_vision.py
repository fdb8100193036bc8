"""Vision benchmark: per-stage latency, analysed frames/s, `analyze` speed and peak memory.

Not a test: it prints numbers and their ratio to the targets (PASS/MISS) and exits 0 either way
(exit 1 only with --strict when a target is missed). Needs the real models and media in
../shared (or $EMOTION_STREAM_SHARED); see bench/README.md.

    EMOTION_STREAM_MODELS=../shared/models python bench/bench_vision.py [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/bench_vision.py` without an installed package
    sys.path.insert(0, str(ROOT))

from stream.analysis.stages import Stages  # noqa: E402
from stream.core.config import ENV_MODELS, Config, load_config  # noqa: E402
from stream.core.types import U8, VideoFrame  # noqa: E402
from stream.offline.analyze import analyze_file, with_fps  # noqa: E402
from stream.vision.pipeline import VisionPipeline  # noqa: E402

SHARED = Path(os.environ.get("EMOTION_STREAM_SHARED", str(ROOT.parent / "shared")))

#: Analysed frames/s targets on a 2-core CPU, one process, by number of faces.
TARGET_FPS: dict[int, float] = {1: 60.0, 4: 25.0}
#: `analyze` must run at least this many times faster than real time (at 10 fps analysis).
TARGET_SPEEDUP = 3.0
#: Peak resident memory of one `emotion-stream analyze` process, in MB (10^6 bytes).
TARGET_RSS_MB = 400.0

FRAME_W, FRAME_H = 640, 480
FRAME_RATE = 30.0
BACKGROUND = 128
ANALYZE_FPS = 10.0
DEFAULT_CLIPS = (
    "pyfeat_WolfgangLanger_Pexels.mp4",
    "face_recognition_short_hamilton_clip.mp4",
    "fer_woman2.mp4",
)
QUICK_CLIPS = ("face_recognition_short_hamilton_clip.mp4",)
MEMORY_CLIP = "pyfeat_WolfgangLanger_Pexels.mp4"
STAGES = ("detect", "track", "emotion", "total")


# --------------------------------------------------------------------------- synthetic scenes


@dataclass(frozen=True)
class FaceCrop:
    """A square crop around one person's face, with some context around it."""

    person: str
    file: str
    image: U8


def _square_crop(image: U8, box: Sequence[float], scale: float) -> tuple[U8, bool]:
    """Square crop of side `scale` x the box's longer side, centred on the box.

    Returns:
        The crop (edges replicated where it leaves the image) and whether it fitted inside.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = round(max(x2 - x1, y2 - y1) * scale)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    h, w = image.shape[:2]
    pad = max(0, -left, -top, left + side - w, top + side - h)
    if pad:
        image = np.asarray(
            cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE), dtype=np.uint8
        )
    crop = image[top + pad : top + pad + side, left + pad : left + pad + side]
    return np.ascontiguousarray(crop), pad == 0


def load_faces(identities: Path, pipeline: VisionPipeline, count: int) -> list[FaceCrop]:
    """Crop one face each of `count` different people from the identity photos.

    Uses the project's detector; prefers photos where a 1.6x context crop fits in the image.
    """
    rows = list(csv.DictReader((identities / "labels.csv").open(encoding="utf-8")))
    by_person: dict[str, list[str]] = {}
    for row in rows:
        person, file = row["person"], row["file"]
        if person.startswith("MULTI") or "aligned" in file or "partial" in file:
            continue
        by_person.setdefault(person, []).append(file)
    crops: list[FaceCrop] = []
    for person, files in by_person.items():
        fallback: FaceCrop | None = None
        for file in files:
            img = cv2.imread(str(identities / file), cv2.IMREAD_COLOR)
            if img is None:
                continue
            image = np.asarray(img, dtype=np.uint8)
            dets = pipeline.detector(VideoFrame(image, 0.0))
            if len(dets) != 1:
                continue
            crop, fits = _square_crop(image, dets.boxes[0].tolist(), 1.6)
            face = FaceCrop(person, file, crop)
            if fits:
                fallback = face
                break
            fallback = fallback or face
        if fallback is not None:
            crops.append(fallback)
        if len(crops) == count:
            return crops
    raise RuntimeError(f"found faces of only {len(crops)} people in {identities}, need {count}")


class DriftScene:
    """Faces tiled on a grey 640x480 canvas, each drifting about 1-2 pixels per frame.

    Each tile follows its own slow sinusoid in x and y (integer pixel positions), so the
    sequence moves like people sitting in front of a camera rather than repeating one frame.
    """

    def __init__(self, faces: Sequence[FaceCrop], seed: int = 0) -> None:
        n = len(faces)
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        cell_w, cell_h = FRAME_W // cols, FRAME_H // rows
        self.side = int(min(cell_w, cell_h) * 0.75)
        rng = np.random.default_rng(seed)
        self.tiles: list[U8] = []
        self.motion: list[tuple[int, int, float, float, float, float, float]] = []
        for k, face in enumerate(faces):
            tile = cv2.resize(face.image, (self.side, self.side), interpolation=cv2.INTER_AREA)
            self.tiles.append(np.asarray(tile, dtype=np.uint8))
            r, c = divmod(k, cols)
            ax = c * cell_w + (cell_w - self.side) // 2
            ay = r * cell_h + (cell_h - self.side) // 2
            margin = min(cell_w - self.side, cell_h - self.side) // 2 - 1
            amp = float(min(margin, 24))
            speed = float(rng.uniform(1.0, 2.0))  # peak pixels per frame
            period = 2 * math.pi * amp / speed if amp > 0 else 1.0
            px, py = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))
            self.motion.append((ax, ay, amp, period, period * 1.37, px, py))

    def frame(self, index: int) -> VideoFrame:
        """The frame at `index` (time index / 30 s)."""
        canvas = np.full((FRAME_H, FRAME_W, 3), BACKGROUND, dtype=np.uint8)
        s = self.side
        for tile, (ax, ay, amp, per_x, per_y, px, py) in zip(self.tiles, self.motion, strict=True):
            x = ax + round(amp * math.sin(2 * math.pi * index / per_x + px))
            y = ay + round(amp * math.sin(2 * math.pi * index / per_y + py))
            canvas[y : y + s, x : x + s] = tile
        return VideoFrame(canvas, index / FRAME_RATE, index)


# --------------------------------------------------------------------------- measurements


@dataclass
class FaceRun:
    """Result of one synthetic-sequence run."""

    faces: int
    threads: int
    frames: int
    face_px: int
    stage_ms: dict[str, float]
    median_total_ms: float
    p95_total_ms: float
    fps: float
    embedded_frames: int
    embeddings: int
    ids: int
    faces_mean: float


def run_faces(
    pipeline: VisionPipeline, faces: Sequence[FaceCrop], frames: int, warmup: int, threads: int
) -> FaceRun:
    """Run a drifting sequence through a fresh session; time the frames after `warmup`."""
    scene = DriftScene(faces)
    pipeline.reset()
    sums = dict.fromkeys(STAGES, 0.0)
    totals: list[float] = []
    wall = 0.0
    embedded_frames = embeddings = seen = 0
    numbers: set[int] = set()
    for i in range(warmup + frames):
        frame = scene.frame(i)
        t0 = time.perf_counter()
        result = pipeline.process(frame)
        dt = time.perf_counter() - t0
        if i < warmup:
            continue
        wall += dt
        for k in STAGES:
            sums[k] += result.timings_ms.get(k, 0.0)
        totals.append(result.timings_ms["total"])
        embedded_frames += result.embedded > 0
        embeddings += result.embedded
        seen += len(result.faces)
        numbers.update(f.number for f in result.faces)
    p50, p95 = (float(v) for v in np.percentile(totals, [50, 95])) if totals else (0.0, 0.0)
    return FaceRun(
        faces=len(faces),
        threads=threads,
        frames=frames,
        face_px=int(scene.side / 1.6),
        stage_ms={k: v / max(frames, 1) for k, v in sums.items()},
        median_total_ms=p50,
        p95_total_ms=p95,
        fps=frames / wall if wall > 0 else 0.0,
        embedded_frames=embedded_frames,
        embeddings=embeddings,
        ids=len(numbers),
        faces_mean=seen / max(frames, 1),
    )


@dataclass
class ClipRun:
    """Result of `analyze_file` on one clip."""

    clip: str
    duration_s: float
    wall_s: float
    frames: int
    faces: int
    process_ms: float
    speedup: float
    voice: bool = False


def run_clip(path: Path, config: Config, stages: Stages, voice: bool) -> ClipRun:
    """Analyse one clip at 10 fps with loaded models (model loading is not timed).

    With `voice`, the audio chain and 25 fps mouth sampling run too (the default of `analyze`
    when a file has audio); without, it is the vision work the issue's target is about.
    """
    config = config.replace("audio", enabled=voice)
    t0 = time.perf_counter()
    analysis = analyze_file(path, with_fps(config, ANALYZE_FPS), stages=stages)
    wall = time.perf_counter() - t0
    duration = analysis.info.duration
    return ClipRun(
        clip=path.name,
        duration_s=duration,
        wall_s=wall,
        frames=analysis.frames,
        faces=len(analysis.faces),
        process_ms=analysis.stage_ms.get("total", 0.0),
        speedup=duration / wall if wall > 0 else 0.0,
        voice=voice,
    )


@dataclass
class MemoryRun:
    """Peak RSS of one child process."""

    what: str
    rss_mb: float
    wall_s: float
    exit_code: int


#: Tiny launcher: spawns argv[2:] with stdout/stderr to the file argv[1], waits with wait4 and
#: prints [exit code, ru_maxrss KiB] of exactly that process as JSON.
_LAUNCHER = """\
import json, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
acts = [(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)]
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, file_actions=acts)
_, status, usage = os.wait4(pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss]))
"""


def child_peak_rss(what: str, cmd: Sequence[str]) -> MemoryRun:
    """Run `cmd` in a fresh process and return its own peak RSS (ru_maxrss from os.wait4).

    The process is started by a tiny launcher rather than by this process: on Linux a child's
    ru_maxrss also counts the address space it had before exec, i.e. a copy of its parent, so
    spawning it from here would report at least this (large) benchmark process's RSS. The
    launcher is a bare interpreter (about 11 MB), a floor the measurement cannot go below.
    """
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, log.name, *cmd],
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - t0
        code, maxrss_kib = json.loads(done.stdout)
        if code not in (0, 4):  # 4: no faces found, still a valid measurement
            tail = Path(log.name).read_text(errors="replace")[-2000:]
            print(f"  ! {what} exited {code}:\n{tail}", file=sys.stderr)
    return MemoryRun(what, int(maxrss_kib) * 1024 / 1e6, wall, int(code))


def cli_command() -> list[str]:
    """The `emotion-stream` entry point of this interpreter's environment."""
    script = Path(sys.executable).with_name("emotion-stream")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "stream"]


# --------------------------------------------------------------------------- reporting


@dataclass
class Check:
    """One measured number against its target."""

    name: str
    measured: float
    target: float
    unit: str
    higher_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """measured/target (target/measured where lower is better): >= 1 passes."""
        if self.higher_is_better:
            return self.measured / self.target
        return self.target / self.measured if self.measured > 0 else math.inf

    @property
    def ok(self) -> bool:
        """Whether the target is met."""
        return self.ratio >= 1.0


def _fmt_stage_row(run: FaceRun) -> str:
    s = run.stage_ms
    return (
        f"  {run.faces:>5} {run.face_px:>6} {run.threads:>3} {s['detect']:>8.2f} {s['track']:>8.2f}"
        f" {s['emotion']:>8.2f} {s['total']:>8.2f} {run.median_total_ms:>6.2f}"
        f" {run.p95_total_ms:>6.2f} {run.fps:>6.1f}"
        f" {run.embedded_frames:>5}/{run.frames:<5} {run.embeddings:>6} {run.ids:>4}"
        f" {run.faces_mean:>6.2f}"
    )


def _stage_header() -> str:
    return (
        f"  {'faces':>5} {'facepx':>6} {'thr':>3} {'detect':>8} {'track':>8} {'emotion':>8}"
        f" {'total':>8} {'p50':>6} {'p95':>6} {'fps':>6} {'emb.frames':>11} {'embeds':>6}"
        f" {'ids':>4} {'shown':>6}"
    )


def print_checks(checks: Sequence[Check]) -> None:
    """Targets with ratio (>= 1 passes) and PASS/MISS (shared by the benchmarks)."""
    print("\nSummary (ratio = measured/target, or target/measured where lower is better)")
    w = max([46, *(len(c.name) for c in checks)])
    print(f"  {'metric':<{w}} {'measured':>10} {'target':>11} {'ratio':>7}  status")
    for c in checks:
        op = ">=" if c.higher_is_better else "<="
        print(
            f"  {c.name:<{w}} {c.measured:>7.2f} {c.unit:<2} {op} {c.target:>6.1f} {c.unit:<2}"
            f" {c.ratio:>7.2f}  {'PASS' if c.ok else 'MISS'}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(
        description="Benchmark the vision pipeline against its CPU targets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--frames", type=int, default=300, help="timed frames per face count")
    p.add_argument("--warmup", type=int, default=30, help="untimed frames before timing")
    p.add_argument("--faces", default="1,4,8", help="comma-separated face counts")
    p.add_argument(
        "--clips", nargs="*", help=f"clips in <shared>/media/video (default {DEFAULT_CLIPS})"
    )
    p.add_argument("--memory-clip", default=MEMORY_CLIP, help="clip for the peak-RSS run")
    p.add_argument("--no-threads", action="store_true", help="skip the intra_op_threads 1 vs 2 run")
    p.add_argument("--no-analyze", action="store_true", help="skip the analyze_file runs")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS run")
    p.add_argument(
        "--quick",
        action="store_true",
        help="100 frames, warm-up 15, one clip, no thread comparison",
    )
    p.add_argument("--shared", type=Path, default=SHARED, help="folder with media/ and models/")
    p.add_argument("--models", help=f"models folder (default ${ENV_MODELS}, else <shared>/models)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.warmup, args.no_threads = min(args.frames, 100), 15, True
        args.clips = args.clips or list(QUICK_CLIPS)
    args.clips = args.clips or list(DEFAULT_CLIPS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the results."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    media = args.shared / "media"
    models = args.models or os.environ.get(ENV_MODELS) or str(args.shared / "models")
    config = load_config().replace("models", dir=models)
    face_counts = [int(x) for x in args.faces.split(",") if x.strip()]

    import onnxruntime

    t0 = time.perf_counter()
    stages = Stages(config)
    pipeline = stages.vision()
    load_s = time.perf_counter() - t0
    print(
        f"emotion-stream vision benchmark | python {platform.python_version()} | onnxruntime "
        f"{onnxruntime.__version__} | {os.cpu_count()} CPUs | runtime: {config.runtime}"
    )
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"models {config.models_dir()} (pipeline built in {load_s:.2f} s) | media {media}"
        f" | load average {load}"
    )

    faces = load_faces(media / "identities", pipeline, max(face_counts))
    print("faces: " + ", ".join(f"{f.person} ({f.file})" for f in faces))

    # 1. Per-stage latency and analysed frames/s on drifting real faces.
    print(
        f"\n1. Synthetic {FRAME_W}x{FRAME_H} sequences, real faces drifting 1-2 px/frame at "
        f"{FRAME_RATE:.0f} fps media time; {args.warmup} warm-up + {args.frames} timed frames; "
        "mean ms per frame"
    )
    print(_stage_header())
    runs: list[FaceRun] = []
    for n in face_counts:
        run = run_faces(
            pipeline, faces[:n], args.frames, args.warmup, config.runtime.intra_op_threads
        )
        runs.append(run)
        print(_fmt_stage_row(run), flush=True)
    print(
        "  (ms are means over the timed frames, p50/p95 of total; fps = timed frames / wall time"
        " of process();\n   facepx: face box side; emb.frames: frames that computed embeddings;"
        " ids: distinct face numbers; shown: faces reported per frame)"
    )

    # 2. analyze wall time vs clip duration.
    clip_runs: list[ClipRun] = []
    if not args.no_analyze:
        print(f"\n2. analyze_file at {ANALYZE_FPS:.0f} fps (pipeline already loaded)")
        print(
            f"  {'clip':<42} {'dur s':>6} {'wall s':>7} {'frames':>6} {'faces':>5}"
            f" {'proc ms':>8} {'decode+other s':>14} {'x realtime':>10}"
        )
        for clip in args.clips:
            for voice in (False, True):
                run_c = run_clip(media / "video" / clip, config, stages, voice)
                clip_runs.append(run_c)
                other = run_c.wall_s - run_c.frames * run_c.process_ms / 1e3
                name = run_c.clip[:34] + (" +voice" if voice else " video")
                print(
                    f"  {name:<42} {run_c.duration_s:>6.2f} {run_c.wall_s:>7.2f}"
                    f" {run_c.frames:>6} {run_c.faces:>5} {run_c.process_ms:>8.2f} {other:>14.2f}"
                    f" {run_c.speedup:>10.1f}",
                    flush=True,
                )

    # 3. Peak RSS of a fresh `emotion-stream analyze` process.
    mem_runs: list[MemoryRun] = []
    if not args.no_memory:
        print("\n3. Peak RSS of fresh processes (os.wait4 ru_maxrss; MB = 10^6 bytes)")
        clip_path = media / "video" / args.memory_clip
        cmd = [*cli_command(), "analyze", str(clip_path), "--no-progress", "--models", models]
        imports = [
            sys.executable,
            "-c",
            "import stream.offline.analyze, stream.cli, stream.analysis.report",
        ]
        for what, c in (
            (f"emotion-stream analyze {args.memory_clip}", cmd),
            ("for reference: python + stream imports, no models", imports),
            ("for reference: bare python (launcher floor)", [sys.executable, "-c", "pass"]),
        ):
            m = child_peak_rss(what, c)
            mem_runs.append(m)
            print(f"  {m.what:<60} {m.rss_mb:>7.1f} MB  {m.wall_s:>5.2f} s  exit {m.exit_code}")

    # 4. intra_op_threads 1 vs 2.
    thread_runs: list[FaceRun] = []
    if not args.no_threads:
        print("\n4. runtime.intra_op_threads 1 vs 2")
        print(_stage_header())
        # Both settings run here, back to back, so slow drift of the machine does not favour one.
        by_threads = {
            t: VisionPipeline.from_config(config.replace("runtime", intra_op_threads=t))
            for t in (1, 2)
        }
        for n in (1, 4):
            if n > len(faces):
                continue
            for threads, p in by_threads.items():
                run = run_faces(p, faces[:n], args.frames, args.warmup, threads)
                thread_runs.append(run)
                print(_fmt_stage_row(run), flush=True)
        del by_threads
        slow_2 = False
        for n in (1, 4):
            pair = {r.threads: r for r in thread_runs if r.faces == n}
            if 1 in pair and 2 in pair:
                fast = 1 if pair[1].fps >= pair[2].fps else 2
                print(
                    f"  {n} face(s): {pair[1].fps:.1f} fps with 1 thread, {pair[2].fps:.1f} fps "
                    f"with 2 -> {fast} thread(s) faster by "
                    f"{max(pair[1].fps, pair[2].fps) / min(pair[1].fps, pair[2].fps):.2f}x"
                )
                if pair[2].fps < 0.7 * pair[1].fps:
                    slow_2 = True
        if slow_2:
            print(
                "  note: every session has its own intra-op pool whose threads spin-wait after a"
                " run;\n  with 4 sessions on 2 cores they steal CPU from the next model"
                " (session.intra_op.allow_spinning)"
            )

    checks: list[Check] = []
    for run in runs:
        if run.faces in TARGET_FPS:
            checks.append(
                Check(f"analysed fps, {run.faces} face(s)", run.fps, TARGET_FPS[run.faces], "/s")
            )
    for c_run in clip_runs:
        if c_run.voice:  # reported above; the target is about the vision work
            continue
        checks.append(
            Check(f"analyze x realtime, {c_run.clip[:22]}", c_run.speedup, TARGET_SPEEDUP, "x")
        )
    if mem_runs:
        checks.append(
            Check(
                "peak RSS, emotion-stream analyze",
                mem_runs[0].rss_mb,
                TARGET_RSS_MB,
                "MB",
                higher_is_better=False,
            )
        )
    print_checks(checks)
    dominant = max(("detect", "track", "emotion"), key=lambda k: sum(r.stage_ms[k] for r in runs))
    print(f"  dominant stage over the face runs: {dominant}")
    print(f"  benchmark wall time {time.perf_counter() - t_start:.1f} s")

    if args.json:
        payload = {
            "face_runs": [asdict(r) for r in runs],
            "thread_runs": [asdict(r) for r in thread_runs],
            "clip_runs": [asdict(r) for r in clip_runs],
            "memory_runs": [asdict(r) for r in mem_runs],
            "checks": [
                {
                    "name": c.name,
                    "measured": c.measured,
                    "target": c.target,
                    "ratio": c.ratio,
                    "ok": c.ok,
                }
                for c in checks
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 1 if args.strict and not all(c.ok for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
