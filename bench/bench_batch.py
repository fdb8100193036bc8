"""Many files: throughput of `analyze` over a folder with 1 and 2 local workers (and Ray), and
the scaling efficiency. Not a test: it prints.

    EMOTION_STREAM_MODELS=../shared/models python bench/bench_batch.py [--copies 3] [--ray]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stream.core.config import ENV_MODELS, load_config  # noqa: E402
from stream.offline.batch import analyze_many  # noqa: E402

SHARED = Path(os.environ.get("EMOTION_STREAM_SHARED", str(ROOT.parent / "shared")))
CLIPS = (
    "pyfeat_WolfgangLanger_Pexels.mp4",
    "fer_woman2.mp4",
    "face_recognition_short_hamilton_clip.mp4",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--copies", type=int, default=2, help="copies of each clip in the folder")
    p.add_argument("--workers", default="1,2", help="worker counts to compare")
    p.add_argument("--voice", action="store_true", help="analyse voice too (default: video only)")
    p.add_argument("--ray", action="store_true", help="also run the largest count on local Ray")
    args = p.parse_args(argv)
    models = os.environ.get(ENV_MODELS) or str(SHARED / "models")
    cfg = load_config().replace("models", dir=models).replace("audio", enabled=args.voice)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    src = work / "in"
    src.mkdir()
    media_s = 0.0
    from stream.offline.media import probe

    for clip in CLIPS:
        for k in range(args.copies):
            dst = src / f"{Path(clip).stem}-{k}.mp4"
            shutil.copy(SHARED / "media" / "video" / clip, dst)
            media_s += probe(dst).duration
    files = len(CLIPS) * args.copies
    print(f"{files} files, {media_s:.0f} s of video, {os.cpu_count()} CPUs, voice={args.voice}")
    head = ("workers", "engine", "wall s", "files/min", "x real time", "eff")
    print("{:>8} {:>7} {:>7} {:>9} {:>11} {:>5}".format(*head))
    base = None
    counts = [int(x) for x in args.workers.split(",")]
    runs = [(n, False) for n in counts] + ([(max(counts), True)] if args.ray else [])
    for n, use_ray in runs:
        out = work / f"out-{n}-{use_ray}"
        t0 = time.perf_counter()
        rows = analyze_many([str(src)], out, cfg, workers=n, use_ray=use_ray)
        wall = time.perf_counter() - t0
        assert all(r.status == "ok" for r in rows), [r.error for r in rows if r.error]
        base = base or wall * n  # one worker's time
        eff = base / (wall * n)
        engine = "ray" if use_ray else "local"
        print(f"{n:>8} {engine:>7} {wall:>7.1f} {60 * files / wall:>9.1f} {media_s / wall:>11.1f} "
              f"{eff:>5.2f}")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
