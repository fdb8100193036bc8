"""Identity tracking: metrics on the meeting-gallery composites, embeddings per second, and what
the identity hardening costs in analysed frames per second with 4 faces.

The composites come from tests/compose_gallery.py (real clips and animated identity photos in
../shared/media). "Hardened" is the default policy; "plain" sets the policy's extra checks to
values that let every match through as before (keep_after_change = reid_threshold, no margin,
no gallery/view terms, flow never drops an ID). Runs alternate (plain, hardened, ...) so that
load from other processes hits both alike. Not a test: it prints, and writes JSON with --json.

    python bench/bench_identity.py            # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stream.analysis.consolidate import consolidate  # noqa: E402
from stream.analysis.stages import Stages  # noqa: E402
from stream.analysis.stream import StreamAnalysis  # noqa: E402
from stream.core.config import Config, load_config  # noqa: E402
from stream.core.types import U8, VideoFrame  # noqa: E402
from tests.compose_gallery import SCENARIOS, identity_metrics, render_frames  # noqa: E402

SHARED = ROOT.parent / "shared"


def plain(config: Config) -> Config:
    """The policy's extra checks switched off (the tracker as it decided before)."""
    t = config.tracking
    return config.replace(
        "tracking",
        keep_after_change=t.reid_threshold,
        reid_margin=0.0,
        reid_per_doubling=0.0,
        reid_poor_view=0.0,
        flow_keep=-0.99,
    )


def run(stages: Stages, config: Config, frames: list[VideoFrame], fps: float) -> dict[str, Any]:
    """Analyse frames like `analyze` does (every frame detected); frames/s and embeddings."""
    analysis = StreamAnalysis(stages, fps, config=config)
    embedded = 0
    t0 = time.perf_counter()
    for f in frames:
        embedded += analysis.push_video(f).embedded
    wall = time.perf_counter() - t0
    analysis.finish()
    t1 = time.perf_counter()
    views = analysis.tracklet_views()
    c = config.tracking
    people = consolidate(views, c.join_threshold, c.join_margin)
    consolidate_ms = (time.perf_counter() - t1) * 1e3
    return {
        "frames_per_s": len(frames) / wall,
        "embeddings": embedded,
        "embeddings_per_frame": embedded / len(frames),
        "tracklets": len(views),
        "people": len(people.people),
        "consolidate_ms": consolidate_ms,
        "analysis": analysis,
    }


def metrics(name: str, analysis: StreamAnalysis, fps: float, n: int) -> str:
    sc = SCENARIOS[name]()
    faces = [
        (p.t, f.number, (p.sample.box[0] + p.sample.box[2]) / 2 * sc.width,
         (p.sample.box[1] + p.sample.box[3]) / 2 * sc.height)
        for f in analysis.aggregator.faces()
        for p in analysis.aggregator.timeline(f.number)
    ]  # fmt: skip
    return identity_metrics(sc, [i / fps for i in range(n)], faces).line()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fps", type=float, default=5.0, help="analysed frames per second")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args()
    config = load_config(ROOT / "configs" / "default.toml", env={}).replace(
        "models", dir=str(SHARED / "models")
    )
    config = config.replace("actions", enabled=False) if hasattr(config, "actions") else config
    stages = Stages(config, voice=False)
    detector = stages.vision_models.detector

    def find_face(img: U8) -> tuple[float, float, float, float] | None:
        d = detector(VideoFrame(img, 0.0))
        if len(d) == 0:
            return None
        x1, y1, x2, y2 = (float(v) for v in d.boxes[int(np.argmax(d.boxes[:, 2] - d.boxes[:, 0]))])
        return x1, y1, x2, y2

    out: dict[str, Any] = {}
    # Embedder throughput: batches of 4 aligned faces.
    emb = stages.vision_models.embedder
    crops = np.random.default_rng(0).integers(0, 255, (4, 112, 112, 3), dtype=np.uint8)
    emb.embed_aligned(crops)
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 2.0:
        emb.embed_aligned(crops)
        n += 4
    out["embeddings_per_s"] = n / (time.perf_counter() - t0)
    print(f"embedder: {out['embeddings_per_s']:.0f} faces/s (batches of 4)")

    for name in ("2x2", "3x3"):
        sc = SCENARIOS[name]()
        step = round(sc.fps / args.fps)
        frames = [
            VideoFrame(f.image, f.t, k)
            for k, f in enumerate(f for f in render_frames(sc, find_face) if f.index % step == 0)
        ]
        res: dict[str, list[dict[str, Any]]] = {"plain": [], "hardened": []}
        for _ in range(args.rounds):
            for key, cfg in (("plain", plain(config)), ("hardened", config)):
                res[key].append(run(stages, cfg, frames, args.fps))
        for key, runs in res.items():
            fps = float(np.median([r["frames_per_s"] for r in runs]))
            r = runs[-1]
            line = metrics(name, r.pop("analysis"), args.fps, len(frames))
            for x in runs[:-1]:
                x.pop("analysis")
            print(
                f"{name} {key:8s} {fps:5.1f} frames/s, {r['embeddings_per_frame']:.2f} "
                f"embeddings/frame, online: {line}; consolidation {r['consolidate_ms']:.1f} ms "
                f"-> {r['people']} people from {r['tracklets']} tracklets"
            )
            out[f"{name}_{key}"] = {**r, "frames_per_s": fps, "online": line}
        cost = 1 - out[f"{name}_hardened"]["frames_per_s"] / out[f"{name}_plain"]["frames_per_s"]
        out[f"{name}_cost"] = cost
        print(f"{name} hardening cost: {100 * cost:+.1f}% analysed frames/s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
