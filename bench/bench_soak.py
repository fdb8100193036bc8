"""Soak benchmark: one live session for a simulated working day, in accelerated media time.

Not a test. A real `LiveSession` (the server's session object: frame budget, pipeline, tracker,
aggregates, facial actions, voice prosody, diarizer, speaker matching, events) runs on the fake
stages of `stream/analysis/fakes.py`: only the models are fake, so every per-session structure
grows as it would in a call. Frames are handed over as fast as they are analysed (each after
the previous frame's event), audio in step with them, on a simulated clock, so 8 hours of a
call take minutes. Faces come and go (one leaves for 30 s every 10 minutes), mouths move, two
voices take turns on one diarized room track.

Prints the process RSS per simulated hour and, with --profile, the top growing allocation
sites (tracemalloc snapshots diffed per interval, in bytes per simulated minute, attributed to
the innermost frame inside `stream/`). At the end the session's report (JSON, CSV, HTML, made
by the live server's writers) is checked to span the whole session.

    python bench/bench_soak.py                          # 8 simulated hours, RSS per hour
    python bench/bench_soak.py --hours 0.5 --profile 5  # where the bytes go, every 5 sim. min

The same profiler runs inside `emotion-stream serve` for `bench/bench_live.py --memory-profile`
(`python -m bench.bench_soak serve-profiled OUT -- serve ARGS...`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import linecache
import math
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/bench_soak.py` without an installed package
    sys.path.insert(0, str(ROOT))

from stream.analysis.fakes import (  # noqa: E402
    BACKGROUND,
    FakeFace,
    FakeStages,
    draw_faces,
    fake_audio_frames,
)
from stream.core.config import Config, load_config  # noqa: E402
from stream.core.types import VideoFrame  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
SIZE = (320, 240)
#: The voices: two tones taking turns with pauses (one minute, repeated).
TURNS = tuple((s, s + 5.5, 210.0 if k % 2 == 0 else 330.0) for k, s in enumerate(range(0, 60, 7)))


def rss_mb() -> float:
    """This process' resident memory in MB (10^6 bytes)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * PAGE / 1e6


# --------------------------------------------------------------------------- profiler


@dataclass
class HeapProfile:
    """tracemalloc snapshots diffed per interval, attributed to allocation sites in the project.

    Each diff is grouped by the innermost traceback frame inside the project (a numpy array made
    by `np.zeros` in smoothing.py counts for that line of smoothing.py), so the sites name the
    code that keeps allocating; what holds on to the blocks is read from the site.
    """

    nframes: int = 8
    top: int = 15
    root: str = f"{ROOT}{os.sep}"
    rows: list[dict[str, Any]] = field(default_factory=list)
    _prev: tracemalloc.Snapshot | None = None
    _prev_t: float = 0.0
    _prev_rss: float = 0.0
    _prev_trace_mb: float = 0.0

    def start(self) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.nframes)

    def take(self, t_min: float, label: str) -> dict[str, Any] | None:
        """Snapshot now (`t_min`: session minutes); returns the diff against the previous one."""
        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<*>"))
        )
        rss = rss_mb()
        trace_mb = tracemalloc.get_tracemalloc_memory() / 1e6
        traced_mb = tracemalloc.get_traced_memory()[0] / 1e6
        row = None
        if self._prev is not None:
            minutes = max(t_min - self._prev_t, 1e-9)
            sites: dict[str, int] = {}
            for stat in snap.compare_to(self._prev, "traceback"):
                if stat.size_diff:
                    key = self._site(stat.traceback)
                    sites[key] = sites.get(key, 0) + stat.size_diff
            top = sorted(sites.items(), key=lambda kv: -kv[1])[: self.top]
            row = {
                "label": label,
                "from_min": round(self._prev_t, 2),
                "to_min": round(t_min, 2),
                "rss_mb": round(rss, 2),
                "rss_mb_per_min": round((rss - self._prev_rss) / minutes, 4),
                "traced_mb": round(traced_mb, 2),
                "tracemalloc_own_mb_per_min": round((trace_mb - self._prev_trace_mb) / minutes, 4),
                "traced_mb_per_min": round(sum(sites.values()) / 1e6 / minutes, 4),
                "sites": [
                    {"site": k, "bytes_per_min": round(v / minutes), "code": _code(k)}
                    for k, v in top
                ],
            }
            self.rows.append(row)
        self._prev, self._prev_t, self._prev_rss, self._prev_trace_mb = snap, t_min, rss, trace_mb
        return row

    def _site(self, tb: tracemalloc.Traceback) -> str:
        for frame in reversed(tb):  # most recent call last
            name = frame.filename
            if name.startswith(self.root) and f"{os.sep}.venv{os.sep}" not in name:
                return f"{name[len(self.root) :]}:{frame.lineno}"
        frame = tb[-1]
        return f"{frame.filename.rsplit(os.sep, 2)[-1]}:{frame.lineno} (outside the project)"


def _code(site: str) -> str:
    path, _, rest = site.partition(":")
    line = rest.split(" ", 1)[0]
    full = ROOT / path if (ROOT / path).exists() else None
    return linecache.getline(str(full), int(line)).strip() if full and line.isdigit() else ""


def print_profile_row(row: dict[str, Any]) -> None:
    print(
        f"  [{row['label']}] min {row['from_min']:.1f}-{row['to_min']:.1f}: RSS {row['rss_mb']:.1f}"
        f" MB ({row['rss_mb_per_min'] * 1e3:+.1f} KB/min), traced"
        f" {row['traced_mb_per_min'] * 1e3:+.1f} KB/min (tracemalloc's own"
        f" {row['tracemalloc_own_mb_per_min'] * 1e3:+.1f} KB/min)",
        flush=True,
    )
    for s in row["sites"]:
        if abs(s["bytes_per_min"]) >= 256:
            print(f"    {s['bytes_per_min'] / 1e3:+9.1f} KB/min  {s['site']:<42} {s['code'][:70]}")


def serve_profiled(out: Path, interval_s: float, nframes: int, argv: Sequence[str]) -> int:
    """Run the CLI (`emotion-stream ARGS`) with tracemalloc on (`nframes` deep), writing a heap
    diff every `interval_s` wall seconds to `out` (JSON lines) until it exits."""
    from stream.cli import main as cli_main

    prof = HeapProfile(nframes=nframes)
    prof.start()
    t0 = time.monotonic()
    stop = threading.Event()

    def loop() -> None:
        prof.take(0.0, "start")
        with out.open("w", encoding="utf-8") as f:
            while not stop.wait(interval_s):
                row = prof.take((time.monotonic() - t0) / 60, "serve")
                if row is not None:
                    f.write(json.dumps(row) + "\n")
                    f.flush()

    threading.Thread(target=loop, name="heap-profile", daemon=True).start()
    try:
        return int(cli_main(list(argv)) or 0)
    finally:
        stop.set()


# --------------------------------------------------------------------------- scenario


def faces_at(i: int, fps: float, n: int) -> list[FakeFace]:
    """The faces of frame `i`: `n` people side by side drifting a few pixels, mouths moving;
    person k (of the first three) is away for 30 s in every 10 minutes (at a different time)."""
    t = i / fps
    out = []
    w = SIZE[0]
    side = min(w // max(n, 1) - 12, 110)
    for k in range(n):
        if k < 3 and (t + 200 * k) % 600 >= 570:
            continue
        x = 6 + k * (w // n) + round(4 * math.sin(t / 3 + k))
        y = 50 + round(4 * math.cos(t / 4 + k))
        mouth = (
            0.5 + 0.5 * math.sin(2 * math.pi * t / (1.1 + 0.3 * k)) if (t // 7) % n == k else 0.0
        )
        out.append(FakeFace(k, (x, y, x + side, y + round(1.15 * side)), round(mouth, 1)))
    return out


class FrameSource:
    """Frames drawn on demand (media time i / fps)."""

    def __init__(self, fps: float, faces: int) -> None:
        self.fps = fps
        self.faces = faces

    def frame(self, i: int) -> VideoFrame:
        image = np.full((SIZE[1], SIZE[0], 3), BACKGROUND, np.uint8)
        draw_faces(image, faces_at(i, self.fps, self.faces))
        return VideoFrame(image, i / self.fps, i)


class AudioLoop:
    """The voices' minute of audio as PyAV frames, played in a loop up to a released time."""

    def __init__(self, frame_s: float) -> None:
        self.frames = fake_audio_frames(list(TURNS), 60.0, frame_s=frame_s)
        self.frame_s = frame_s
        self.t = 0.0
        self.until = 0.0
        self.more = asyncio.Condition()

    async def release(self, until: float) -> None:
        async with self.more:
            self.until = until
            self.more.notify_all()

    async def source(self, start: float, end: float) -> AsyncIterator[Any]:
        from stream.live.source import ReceivedAudio

        i = 0
        while self.t < end:
            async with self.more:
                await self.more.wait_for(lambda: self.t <= self.until)
            frame = self.frames[i % len(self.frames)]
            i += 1
            self.t += self.frame_s
            yield ReceivedAudio(frame, start + self.t)


# --------------------------------------------------------------------------- the session


@dataclass
class HourRow:
    hour: float
    rss_mb: float
    frames: int
    wall_s: float
    analysed_fps: float  # analysed frames per wall second over the hour
    p50_ms: float  # receive -> event, per frame (accelerated: the frame's own work)


def hour_row(
    t: float, frames: int, since: float, since_frames: int, latencies: list[float], note: str = ""
) -> HourRow:
    """Measure and print one row: RSS after a collection, frames analysed so far, and the wall
    time, analysed rate and median latency since the last row."""
    gc.collect()
    now = time.perf_counter()
    lat = sorted(latencies)
    r = HourRow(
        round(t / 3600, 3), round(rss_mb(), 1), frames, round(now - since, 1),
        round(since_frames / max(now - since, 1e-9), 1),
        round(lat[len(lat) // 2], 2) if lat else math.nan,
    )  # fmt: skip
    print(
        f"  {r.hour:>5.2f} {r.rss_mb:>8.1f} {r.frames:>8} {r.wall_s:>7.1f}"
        f" {r.analysed_fps:>6.1f} {r.p50_ms:>7.2f}{note}",
        flush=True,
    )
    return r


def soak_config(fps: float) -> Config:
    """The default config with the simulated frame rate as the session's analysed rate (and
    one analysed frame standing for up to 1 / fps: below 2 fps the default 0.5 s would not
    count the whole visible time)."""
    c = load_config()
    c = c.replace("analyze", max_gap_s=max(c.analyze.max_gap_s, 1.0 / fps))
    return c.replace("live", max_fps=fps)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the session; returns what was measured."""
    from stream.live.reports import render
    from stream.live.session import LiveSession, Subscriber
    from stream.live.source import ReceivedVideo

    config = soak_config(args.fps)
    stages = FakeStages(config, voice=not args.no_audio)
    frames = FrameSource(args.fps, args.faces)
    end = args.hours * 3600.0
    total = int(end * args.fps)
    prof = HeapProfile(nframes=args.nframes, top=args.top) if args.profile else None
    if prof is not None:
        prof.start()
    sim = {"t": 0.0}
    wall0 = time.time()
    rows: list[HourRow] = []
    counts = {"frames": 0, "events": 0}
    latencies: list[float] = []
    done = asyncio.Condition()

    async def send(message: str) -> None:
        counts["events"] += 1
        if '"type":"frame"' in message[:40]:
            counts["frames"] += 1
            async with done:
                done.notify_all()

    with (
        ThreadPoolExecutor(1, thread_name_prefix="infer") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="voice") as voice_pool,
    ):
        session = LiveSession(
            config, stages, pool, "soak benchmark", voice_pool, clock=lambda: wall0 + sim["t"],
            pace=False, via="test",
        )  # fmt: skip
        session.subscribe(Subscriber(send, "publisher", limit=100_000))
        start = time.perf_counter()
        audio = None if args.no_audio else AudioLoop(args.audio_frame_s)
        audio_task = None if audio is None else session.add_audio("audio", audio.source(start, end))
        next_hour = args.every
        next_prof = args.profile or math.inf
        hour_wall, hour_frames = time.perf_counter(), 0
        rows.append(HourRow(0.0, rss_mb(), 0, 0.0, 0.0, 0.0))
        print(f"  {'hour':>5} {'RSS MB':>8} {'frames':>8} {'wall s':>7} {'fps':>6} {'p50 ms':>7}")

        def analysed(n: int) -> Callable[[], bool]:
            return lambda: counts["frames"] >= n or session.closed

        async def video() -> AsyncIterator[ReceivedVideo]:
            nonlocal next_hour, next_prof, hour_wall, hour_frames
            for i in range(total):
                frame = frames.frame(i)
                t = frame.t
                sim["t"] = t
                if audio is not None:
                    await audio.release(t)
                if t / 60 >= next_prof and prof is not None:
                    row = prof.take(t / 60, "soak")
                    if row is not None:
                        print_profile_row(row)
                    next_prof += args.profile
                if t / 3600 >= next_hour - 1e-9:
                    rows.append(hour_row(t, i, hour_wall, hour_frames, latencies))
                    latencies.clear()
                    hour_wall, hour_frames = time.perf_counter(), 0
                    next_hour += args.every
                t_in = time.perf_counter()
                yield ReceivedVideo(t, start + t, _const(frame.image), t_in)
                async with done:
                    await done.wait_for(analysed(i + 1))
                latencies.append((time.perf_counter() - t_in) * 1e3)
                hour_frames += 1

        session.add_video("video", video())
        async with done:
            await done.wait_for(lambda: counts["frames"] >= total or session.closed)
        if audio is not None and audio_task is not None:
            await audio.release(math.inf)
            await asyncio.gather(audio_task, return_exceptions=True)
        sim["t"] = end
        note = "  (all media analysed)"
        rows.append(hour_row(end, total, hour_wall, hour_frames, latencies, note))
        await session.close("soak finished")
        closed_rss = rss_mb()
        reports, report_s = {}, {}
        for fmt in ("json", "csv", "html"):
            t0 = time.perf_counter()
            reports[fmt] = render(session, fmt)[0]
            report_s[fmt] = time.perf_counter() - t0
        gc.collect()
        final_rss = rss_mb()
    return {
        "rows": rows,
        "reports": reports,
        "report_s": report_s,
        "closed_rss_mb": closed_rss,
        "final_rss_mb": final_rss,
        "profile": prof.rows if prof else [],
    }


def _const(image: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: image


def check_reports(reports: dict[str, bytes], hours: float) -> list[str]:
    """What the session's reports cover: the JSON's faces' first/last seen, the CSV's times."""
    out = []
    doc = json.loads(reports["json"])
    faces = doc.get("faces", [])
    if faces:
        first = min(f["first_seen_s"] for f in faces)
        last = max(f["last_seen_s"] for f in faces)
        visible = sum(f["visible_s"] for f in faces)
        out.append(
            f"JSON: {len(faces)} faces seen {first / 3600:.2f}-{last / 3600:.2f} h,"
            f" {visible / 3600:.2f} person-hours visible, {len(reports['json']) / 1e3:.0f} KB"
        )
    rows = reports["csv"].decode().splitlines()
    times = [float(r.split(",", 1)[0]) for r in rows[1:] if r and r[0].isdigit()]
    if times:
        out.append(
            f"CSV: {len(rows) - 1} rows, time {min(times) / 3600:.2f}-{max(times) / 3600:.2f} h,"
            f" {len(reports['csv']) / 1e6:.1f} MB"
        )
    out.append(f"HTML: {len(reports['html']) / 1e6:.1f} MB")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Soak a live session for simulated hours on fake stages: RSS per hour.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--hours", type=float, default=8.0, help="simulated session length")
    p.add_argument("--every", type=float, default=1.0, help="RSS line every N simulated hours")
    p.add_argument("--fps", type=float, default=2.0, help="media = analysed frames per second")
    p.add_argument("--faces", type=int, default=3, help="people in the frame")
    p.add_argument("--no-audio", action="store_true", help="video only")
    p.add_argument("--audio-frame-s", type=float, default=0.1, help="seconds per audio frame")
    p.add_argument(
        "--profile", type=float, default=0.0, metavar="MIN",
        help="tracemalloc diff every MIN simulated minutes (slows the run ~2x)",
    )  # fmt: skip
    p.add_argument("--top", type=int, default=15, help="allocation sites per profile diff")
    p.add_argument("--nframes", type=int, default=3, help="traceback depth of the profile")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve-profiled"]:
        out, rest = Path(argv[1]), argv[2:]
        opts = {"--interval": 60.0, "--nframes": 3.0}
        while rest[:1] and rest[0] in opts:
            opts[rest[0]], rest = float(rest[1]), rest[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return serve_profiled(out, opts["--interval"], int(opts["--nframes"]), rest)
    args = parse_args(argv)
    voice = (
        "no audio" if args.no_audio else f"one diarized room track, {args.audio_frame_s:g} s frames"
    )
    print(
        f"soak: {args.hours:g} simulated hours, {args.faces} faces at {args.fps:g} analysed fps"
        f" ({voice}), fake stages, RSS at start {rss_mb():.0f} MB",
        flush=True,
    )
    t0 = time.perf_counter()
    result = asyncio.run(soak(args))
    rows: list[HourRow] = result["rows"]
    print(
        f"  RSS after close {result['closed_rss_mb']:.1f} MB, after the three reports"
        f" {result['final_rss_mb']:.1f} MB (made on demand: their memory is freed but stays"
        " in the allocator's arenas)"
    )
    half = args.hours / 2
    later = [r for r in rows if r.hour >= half - 1e-6]
    if len(later) >= 2:
        growth = later[-1].rss_mb - later[0].rss_mb
        ok = "PASS" if growth <= 20.0 else "MISS"
        print(
            f"  growth over the last {args.hours - later[0].hour:g} h: {growth:+.1f} MB"
            f" (target <= 20 MB: {ok})"
        )
    for line in check_reports(result["reports"], args.hours):
        print(f"  {line}")
    made = ", ".join(f"{k} {v:.1f} s" for k, v in result["report_s"].items())
    print(f"  reports made in {made}; wall {time.perf_counter() - t0:.0f} s")
    if args.json:
        payload = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "hours": [r.__dict__ for r in rows],
            "profile": result["profile"],
            "closed_rss_mb": result["closed_rss_mb"],
            "final_rss_mb": result["final_rss_mb"],
            "report_s": result["report_s"],
        }
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
