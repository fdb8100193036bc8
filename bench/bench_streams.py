"""Many streams on one machine: analysed fps per stream and p95 latency vs the number of streams,
with the dynamic-batching scheduler off and on.

Each simulated stream is a camera at 15 fps showing 4 drifting real faces (640x480); a thread
per stream analyses the newest frame whenever it is free (as the live server does: newest frame
wins), with the live machine budget shared by the streams (one inference thread per stream:
live.workers = streams; detection every k frames, expressions at live.emotion_fps).
Latency is from the frame's capture time to the end of its analysis. Not a test: it prints.

    EMOTION_STREAM_MODELS=../shared/models python bench/bench_streams.py --streams 1,2,4
    ... --provider cuda --streams 8,16,32,48   (on a GPU machine, with onnxruntime-gpu)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_vision import SHARED, DriftScene, load_faces  # noqa: E402
from stream.analysis.budget import MachineBudget  # noqa: E402
from stream.analysis.stages import Stages  # noqa: E402
from stream.core.config import ENV_MODELS, Config, load_config  # noqa: E402
from stream.models.scheduler import BatchingSession  # noqa: E402

CAMERA_FPS = 15.0


@dataclass
class StreamsRun:
    streams: int
    batching: str
    provider: str
    fps_per_stream_mean: float
    fps_per_stream_min: float
    latency_p50_ms: float
    latency_p95_ms: float
    calls_per_batch: float


def run(
    stages: Stages, scenes: list[DriftScene], seconds: float
) -> tuple[list[float], list[float]]:
    """Run len(scenes) streams for `seconds`; returns analysed fps per stream and latencies."""
    n = len(scenes)
    machine = MachineBudget(stages.config.replace("live", workers=n))
    counts = [0] * n
    latencies: list[list[float]] = [[] for _ in range(n)]
    start = time.perf_counter() + 0.5
    stop = start + seconds

    def stream(i: int) -> None:
        pipe = stages.vision(live=True)  # live settings (posture follows behaviour.posture_live)
        budget = machine.track()
        while time.perf_counter() < start:
            time.sleep(0.001)
        last = -1
        while (now := time.perf_counter()) < stop:
            index = int((now - start) * CAMERA_FPS)
            if index == last:
                time.sleep(max(0.0, start + (index + 1) / CAMERA_FPS - now))
                continue
            last = index
            frame = scenes[i].frame(index)
            t = index / CAMERA_FPS
            budget.receive()
            detect, emotion_for = budget.plan(t, pipe.tracker_numbers())
            result = pipe.process(frame, detect, emotion_for)
            budget.observe(t, result, detect)
            done = time.perf_counter()
            budget.occupied((done - now) * 1e3)
            counts[i] += 1
            latencies[i].append((done - (start + t)) * 1e3)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return [c / seconds for c in counts], [x for lat in latencies for x in lat[3:]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--streams", default="1,2,4", help="comma-separated stream counts")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--faces", type=int, default=4, help="faces per stream")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batching", default="off,on", help="scheduler modes to compare")
    p.add_argument("--shared", type=Path, default=SHARED)
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument(
        "--behaviour", default="on", help="behaviour signals (head pose, attention...): on,off"
    )
    args = p.parse_args(argv)
    models = os.environ.get(ENV_MODELS) or str(args.shared / "models")
    base: Config = load_config().replace("models", dir=models)
    base = base.replace("runtime", provider=args.provider)
    probe = Stages(base, voice=False)
    faces = load_faces(args.shared / "media" / "identities", probe.vision(), args.faces * 4)
    runs: list[StreamsRun] = []
    print(f"{'streams':>7} {'batching':>8} {'fps/stream':>10} {'min':>6} {'p50 ms':>7} "
          f"{'p95 ms':>7} {'calls/batch':>11}")  # fmt: skip
    for n in (int(x) for x in args.streams.split(",")):
        scenes = [
            DriftScene(
                faces[(i * args.faces) % len(faces) :][: args.faces] or faces[: args.faces], i
            )
            for i in range(n)
        ]
        for mode, beh in itertools.product(args.batching.split(","), args.behaviour.split(",")):
            cfg = base.replace("runtime", batching=mode).replace("behaviour", enabled=beh == "on")
            stages = Stages(cfg, voice=False)
            fps, lat = run(stages, scenes, args.seconds)
            sess = stages.factory.get(cfg.emotion.ensemble[0].model)
            cpb = sess.stats.mean_calls_per_batch if isinstance(sess, BatchingSession) else 1.0
            r = StreamsRun(
                n,
                mode,
                stages.factory.providers[0].replace("ExecutionProvider", ""),
                float(np.mean(fps)),
                float(np.min(fps)),
                float(np.percentile(lat, 50)) if lat else 0.0,
                float(np.percentile(lat, 95)) if lat else 0.0,
                cpb,
            )
            runs.append(r)
            print(f"{n:>7} {mode:>8} {r.fps_per_stream_mean:>10.1f} {r.fps_per_stream_min:>6.1f} "
                  f"{r.latency_p50_ms:>7.0f} {r.latency_p95_ms:>7.0f} {cpb:>11.2f}"
                  f"  behaviour {beh}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
