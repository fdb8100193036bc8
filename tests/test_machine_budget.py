"""The machine budget: live tracks share the inference time fairly by measured cost (decoding
included), turns go oldest-first, the detector runs less when tracking is confident, and each
track is paced at its share. Fake clocks, fake decode meters and fake frame results only."""

from __future__ import annotations

import asyncio
import dataclasses
import types
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from stream.analysis.budget import MachineBudget, TrackBudget
from stream.analysis.video import pace_actions
from stream.core.config import Config
from stream.core.types import FaceDetections, FaceSample
from stream.vision.blendshapes import ActionScheduler
from stream.vision.pipeline import FaceResult, FrameResult


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _config(**live: float) -> Config:
    """Default config, one inference thread of 2 intra-op threads, live settings overridden."""
    return Config().replace("runtime", intra_op_threads=2).replace("live", **{"workers": 1, **live})


def _machine(
    config: Config, cpu_s: Callable[[], Mapping[str, float]] | None = None
) -> tuple[Clock, MachineBudget]:
    """A machine budget of 2 cores on a fake clock (and, if given, a fake CPU meter)."""
    clock = Clock()
    return clock, MachineBudget(config, cpu_s=cpu_s, cores=2, clock=clock)


def _result(
    detected: bool,
    faces: int = 4,
    step_ms: float = 20.0,
    emotion_ms: float = 0.0,
    emotions: int = 0,
    other_ms: float = 4.0,
    shift: float = 0.0,
    tentative: int = 0,
    fresh: set[int] | None = None,
) -> FrameResult:
    """A result with `faces` confirmed faces in a row (boxes shifted by `shift` px) and
    `tentative` unconfirmed detections, with the given stage times; expressions computed for
    faces 1..`emotions` (or the `fresh` ones)."""
    fresh = set(range(1, emotions + 1)) if fresh is None else fresh
    z8 = np.zeros(8, np.float32)
    out = []
    boxes = []
    for n in range(1, faces + 1):
        box = np.array([100 * n + shift, 100, 100 * n + 80 + shift, 180], np.float32)
        boxes.append(box)
        sample = FaceSample(n, "neutral", 0.9, z8, z8, np.zeros(2, np.float32), (0, 0, 1, 1))
        out.append(FaceResult(n, box, np.zeros((5, 2), np.float32), 1.0, z8, sample, n in fresh))
    ids = list(range(1, faces + 1)) + [-1] * tentative
    boxes += [np.array([0, 0, 50, 50], np.float32)] * tentative
    m = len(ids)
    dets = FaceDetections(
        np.array(boxes, np.float32).reshape(m, 4),
        np.ones(m, np.float32),
        np.zeros((m, 5, 2), np.float32),
        np.array(ids, np.int64),
    )
    key = "detect" if detected else "flow"
    timings = {key: step_ms, "track": 0.0, "emotion": emotion_ms, "smooth": other_ms}
    timings["total"] = sum(timings.values())
    return FrameResult(0.0, 640, 480, out, dets, timings, 0, len(fresh))


def _feed(clock: Clock, tracks: list[TrackBudget], fps: list[float], seconds: float) -> None:
    """Receive frames on each track at its fps for `seconds` of the fake clock."""
    steps = int(seconds * 100)
    for i in range(steps):
        clock.t += 0.01
        for tb, f in zip(tracks, fps, strict=True):
            if int((i + 1) * f / 100) != int(i * f / 100):
                tb.receive()
        tracks[0].machine.refresh()


def _learn(tb: TrackBudget, detect_ms: float, follow_ms: float, face_ms: float) -> None:
    """Teach a track its costs: a detector frame, a flow frame, four expressions."""
    tb.observe(0.0, _result(True, step_ms=detect_ms, emotion_ms=4 * face_ms, emotions=4), True)
    tb.observe(0.1, _result(False, step_ms=follow_ms, shift=50.0), False)


def test_four_equal_streams_get_equal_rates_within_the_machine() -> None:
    clock, m = _machine(_config(max_fps=15, emotion_fps=5, budget_utilisation=0.8))
    tracks = [m.track() for _ in range(4)]
    for tb in tracks:
        _learn(tb, detect_ms=30.0, follow_ms=3.0, face_ms=4.0)
    _feed(clock, tracks, [15] * 4, 2.0)
    rates = [tb.rate for tb in tracks]
    used = sum(tb.rate * tb.frame_cost(tb.detect_every, tb.rate) for tb in tracks)
    print(f"rates {[round(r, 2) for r in rates]}, k {[t.detect_every for t in tracks]}, "
          f"used {used:.0f} of {m.capacity_ms:.0f} ms/s")  # fmt: skip
    assert max(rates) - min(rates) < 1e-6  # fair
    assert all(tb.detect_every == m.live.detect_every_max for tb in tracks)  # detector first
    assert used == pytest.approx(m.capacity_ms, rel=1e-3)  # the whole machine, no more
    assert rates[0] < 15


def test_a_light_stream_leaves_what_it_does_not_need_to_the_others() -> None:
    clock, m = _machine(_config(max_fps=15, emotion_fps=5))
    heavy = [m.track() for _ in range(3)]
    light = m.track()
    for tb in heavy:
        _learn(tb, detect_ms=30.0, follow_ms=3.0, face_ms=4.0)
    light.observe(0.0, _result(True, faces=1, step_ms=6.0, emotion_ms=1.0, emotions=1), True)
    light.observe(0.1, _result(False, faces=1, step_ms=1.0, shift=50.0), False)
    _feed(clock, [*heavy, light], [15] * 4, 2.0)
    print(f"light {light.rate:.1f} fps in {light.share_ms:.0f} ms/s; heavy {heavy[0].rate:.2f}"
          f" fps in {heavy[0].share_ms:.0f} ms/s")  # fmt: skip
    assert light.rate == pytest.approx(heavy[0].rate)  # fair in analysed frames per second
    assert light.share_ms < m.capacity_ms / 4 < heavy[0].share_ms  # the light one costs less
    assert 8.8 < heavy[0].rate < 15  # so all run faster than four heavy streams (8.73 fps)


def test_decoding_is_charged_and_the_rates_stay_equal() -> None:
    """A 30 fps and a 15 fps sender: 4 ms of decoder CPU per frame, on 2 cores that a 2-thread
    inference keeps busy, is all charged: both analyse fewer frames than without decoding, at
    equal rates, the 30 fps sender's share holding its larger decoding."""
    clock = Clock()
    cpu = [0.0]

    def cpu_s() -> dict[str, float]:
        return {"decode": cpu[0]}

    def machine(meter: bool) -> tuple[MachineBudget, TrackBudget, TrackBudget]:
        cfg = _config(max_fps=15, emotion_fps=5)
        m = MachineBudget(cfg, cpu_s=cpu_s if meter else None, cores=2, clock=clock)
        fast, slow = m.track(), m.track()
        for tb in (fast, slow):
            _learn(tb, detect_ms=40.0, follow_ms=6.0, face_ms=5.0)
        return m, fast, slow

    m, fast, slow = machine(True)
    _, fast0, slow0 = machine(False)
    for i in range(300):  # 3 s: 30 fps on `fast`, 15 on `slow`, 4 ms of decoder CPU per frame
        clock.t += 0.01
        for pair, f in (((fast, fast0), 30), ((slow, slow0), 15)):
            if int((i + 1) * f / 100) != int(i * f / 100):
                for tb in pair:
                    tb.receive()
                cpu[0] += 0.004
        m.refresh()
        fast0.machine.refresh()
    print(f"decode {m.decode_ms.value:.2f} ms/frame, charged {m.charged:.2f}; fast: decode"
          f" {fast.decode_ms:.0f} ms/s, share {fast.share_ms:.0f}, {fast.rate:.2f} fps; slow:"
          f" decode {slow.decode_ms:.0f} ms/s, share {slow.share_ms:.0f}, {slow.rate:.2f} fps;"
          f" without decoding {fast0.rate:.2f} fps")  # fmt: skip
    assert m.decode_ms.value == pytest.approx(4.0, rel=0.01)
    assert m.charged == 1.0  # 2 cores, 2 inference threads: decoding displaces inference
    assert fast.decode_ms == pytest.approx(120, rel=0.05)
    assert slow.decode_ms == pytest.approx(60, rel=0.05)
    assert fast.rate == pytest.approx(slow.rate)  # equal analysed rates...
    assert fast.share_ms - slow.share_ms == pytest.approx(60, rel=0.1)  # ...decoding on top
    assert fast.rate < fast0.rate - 0.5  # the machine's decoding costs analysed frames

    # With cores to spare beyond the inference threads, decoding takes nothing from them.
    big = MachineBudget(_config(max_fps=15), cpu_s=cpu_s, cores=16)
    big.clock = clock
    tb = big.track()
    _learn(tb, detect_ms=40.0, follow_ms=6.0, face_ms=5.0)
    for _ in range(100):
        clock.t += 0.01
        for _ in range(3):
            tb.receive()
            cpu[0] += 0.004
        big.refresh()
    assert big.charged == 0.0 and tb.decode_ms == 0.0


def test_detector_runs_less_when_tracking_is_confident() -> None:
    clock, m = _machine(_config(max_fps=15, detect_every_max=4))
    tb = m.track()
    _feed(clock, [tb], [15], 0.5)
    # Plenty of room: the budget alone would detect every frame.
    tb.observe(0.0, _result(True, step_ms=2.0), True)
    tb.observe(0.1, _result(False, step_ms=0.5, shift=1.0), False)
    assert tb.detect_every == 1 and not tb.confident
    plans = []
    for i in range(12):
        t = 0.2 + i / 15
        detect, _ = tb.plan(t, [1, 2, 3, 4])
        plans.append(detect)
        shift = 1.0 + i  # the faces drift; the detector finds them where the flow had them
        tb.observe(t, _result(detect, step_ms=2.0 if detect else 0.5, shift=shift), detect)
    print("detector runs while tracking is confident:", "".join("D" if p else "." for p in plans))
    assert tb.confident and tb.detect_every == 8  # every 4th frame, or every 0.5 s at 15 fps
    assert plans[:3] == [True, True, False]  # every frame until two detections agree...
    assert sum(plans[3:]) <= 2  # ...then every 8th

    # A new face (an unconfirmed detection) ends the confidence: every frame again.
    tb.observe(2.0, _result(True, step_ms=2.0, shift=13.0, tentative=1), True)
    assert not tb.confident and tb.detect_every == 1
    # So does a face the flow followed to the wrong place.
    for i in range(2):
        tb.observe(2.1 + i / 15, _result(True, step_ms=2.0, shift=13.0), True)
    assert tb.confident
    tb.observe(2.3, _result(False, step_ms=0.5, shift=13.0), False)
    tb.observe(2.4, _result(True, step_ms=2.0, shift=60.0), True)
    assert not tb.confident


def test_expressions_oldest_first_within_the_frame_time() -> None:
    clock, m = _machine(_config(max_fps=15, emotion_fps=5))
    tb = m.track()
    _feed(clock, [tb], [15], 0.5)
    # 20 ms per face, 10 ms detector: 15 fps with each face every third frame fits 800 ms/s,
    # but a 53 ms frame holds only two faces when all four are due.
    tb.observe(0.0, _result(True, step_ms=10.0, emotion_ms=80.0, emotions=4, other_ms=0.0), True)
    tb.allocate(800.0)
    seen: list[set[int]] = []
    for i in range(4):
        t = 0.3 + i / 15  # every face is due on the first of these frames
        _, chosen = tb.plan(t, [1, 2, 3, 4])
        seen.append(chosen)
        ms = 20.0 * len(chosen)
        tb.observe(t, _result(True, step_ms=10.0, emotion_ms=ms, other_ms=0.0, fresh=chosen), True)
    print("expressions per frame:", seen)
    assert all(len(c) <= 2 for c in seen)
    assert seen[0] | seen[1] == {1, 2, 3, 4}  # everyone within two frames


def test_tracks_are_paced_in_media_time_skipping_early_frames() -> None:
    m = MachineBudget(_config(max_fps=15), cores=2)
    tb = m.track()
    frames = [k / 30 for k in range(30)]  # a 30 fps camera
    taken = []
    for t in frames:
        if tb.due(t):
            tb.took(t)
            taken.append(round(t * 30))
    print("15 fps of a 30 fps camera:", taken)
    assert taken == list(range(0, 30, 2))  # every other frame, evenly
    tb.want_fps = 30.0
    tb.rate = 30.0
    every = []
    for k in range(30, 60):
        if tb.due(k / 30):
            tb.took(k / 30)
            every.append(k)
    assert every == list(range(30, 60))  # at 30 fps every frame, none waits
    # A late frame (the source stalled): the next may come half a period early, no burst.
    tb.took(3.0)
    assert tb.due(3.0 + 1 / 60) and not tb.due(3.0 + 0.3 / 60)
    # A new media clock (a replaced source starts at 0 again): its first frame is due.
    assert tb.due(0.0)


def test_turns_go_oldest_first_and_a_cancelled_waiter_loses_nothing() -> None:
    async def main() -> list[str]:
        m = MachineBudget(_config(workers=1), cores=2)
        order: list[str] = []
        release = asyncio.Event()

        async def holder() -> None:
            async with m.turn(0.0):
                order.append("holder")
                await release.wait()

        async def waiter(name: str, since: float) -> None:
            async with m.turn(since):
                order.append(name)

        first = asyncio.ensure_future(holder())
        await asyncio.sleep(0)
        tasks = {n: asyncio.ensure_future(waiter(n, s)) for n, s in [("c", 3.0), ("a", 1.0)]}
        tasks["b"] = asyncio.ensure_future(waiter("b", 2.0))
        gone = asyncio.ensure_future(waiter("gone", 0.5))  # oldest, but its task is cancelled
        await asyncio.sleep(0)
        assert m.waiting == 4
        gone.cancel()
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, *tasks.values(), return_exceptions=True)
        async with m.turn(9.0):  # the turn came back: no slot was lost
            order.append("after")
        return order

    order = asyncio.run(main())
    print("turns:", order)
    assert order == ["holder", "a", "b", "c", "after"]


def test_an_idle_track_takes_no_share() -> None:
    clock, m = _machine(_config(max_fps=15))
    a, b = m.track(), m.track()
    for tb in (a, b):
        _learn(tb, detect_ms=60.0, follow_ms=10.0, face_ms=6.0)
    _feed(clock, [a, b], [15, 15], 1.0)
    both = a.share_ms
    _feed(clock, [a, b], [15, 0], 3.0)  # b stops receiving
    print(f"share with two tracks {both:.0f} ms/s, alone {a.share_ms:.0f} ms/s")
    assert both == pytest.approx(m.capacity_ms / 2)
    assert a.share_ms == pytest.approx(m.capacity_ms)
    b.close()
    assert b not in m.tracks


def test_decoding_on_cores_inference_leaves_idle_is_not_charged() -> None:
    """Measured: inference keeps one core busy per worker ms, the loop a fifth of one; on 2
    cores the decoders (0.36 cores) fit in what is left, so the streams are not charged."""
    cpu = {"decode": 0.0, "inference": 0.0, "loop": 0.0}
    clock, m = _machine(_config(max_fps=15, workers=1), cpu_s=lambda: cpu)
    tb = m.track()
    _learn(tb, detect_ms=40.0, follow_ms=6.0, face_ms=5.0)
    assert m.spare_cores == 0  # before measuring: 2 intra-op threads assumed busy
    for i in range(300):
        clock.t += 0.01
        if i % 3 == 0:  # 33 fps received, 10 analysed taking 50 ms of a worker each
            for _ in range(3):
                tb.receive()
                cpu["decode"] += 0.004
            tb.occupied(50.0 / 3.3)
            cpu["inference"] += 0.050 / 3.3
        cpu["loop"] += 0.002
        m.refresh()
    cores = f"inference cores {m.inference_cores.value:.2f}, loop {m.loop_cores:.2f}"
    print(f"{cores}, spare {m.spare_cores:.2f}, decode {m.decode_load:.2f}, charged {m.charged}")
    assert m.inference_cores.value == pytest.approx(1.0, rel=0.02)
    assert m.loop_cores == pytest.approx(0.2, rel=0.05)
    assert m.charged == 0.0 and tb.decode_ms == 0.0


def test_a_track_is_paced_above_its_planned_rate_up_to_the_wanted_one() -> None:
    """Frames are planned to fill `budget_utilisation` of the machine; pacing allows the rest,
    so a lone stream is not slowed by the planning margin (the turns keep several fair)."""
    m = MachineBudget(_config(max_fps=15, budget_utilisation=0.8), cores=2)
    tb = m.track()
    tb.rate = 8.0
    assert tb.pace_fps == pytest.approx(10.0)
    tb.rate = 14.0
    assert tb.pace_fps == 15.0  # never above the wanted rate


def test_expressions_are_spread_over_the_frames() -> None:
    """At 30 fps with 4 faces at 5 expressions/s, one face per frame (not four every sixth):
    each face still gets >= 5 per second."""
    m = MachineBudget(_config(max_fps=30, emotion_fps=5), cores=2)
    tb = m.track()
    tb.observe(0.0, _result(True, step_ms=2.0, emotion_ms=4.0, emotions=4, other_ms=0.0), True)
    tb.allocate(800.0)
    assert tb.rate == 30
    counts = dict.fromkeys(range(1, 5), 0)
    per_frame = []
    for k in range(1, 61):  # two seconds
        t = k / 30
        _, chosen = tb.plan(t, [1, 2, 3, 4])
        per_frame.append(len(chosen))
        for n in chosen:
            counts[n] += 1
        tb.observe(
            t, _result(False, step_ms=0.5, emotion_ms=1.0 * len(chosen), fresh=chosen), False
        )
    print("expressions per frame:", per_frame[:12], "per face in 2 s:", counts)
    assert max(per_frame) == 1
    assert all(c >= 9 for c in counts.values())  # due from 0.2 s on: ~5/s each


def test_decoding_is_charged_when_other_processes_take_the_spare_cores() -> None:
    """The same process as above, but another process keeps 0.7 cores busy: the decoders no
    longer fit beside inference and the loop, and what does not fit is charged."""
    cpu = {"decode": 0.0, "inference": 0.0, "loop": 0.0, "others": 0.0}
    clock, m = _machine(_config(max_fps=15, workers=1), cpu_s=lambda: cpu)
    tb = m.track()
    _learn(tb, detect_ms=40.0, follow_ms=6.0, face_ms=5.0)
    for i in range(300):
        clock.t += 0.01
        if i % 3 == 0:
            for _ in range(3):
                tb.receive()
                cpu["decode"] += 0.004
            tb.occupied(50.0 / 3.3)
            cpu["inference"] += 0.050 / 3.3
        cpu["loop"] += 0.002
        cpu["others"] += 0.007
        m.refresh()
    print(f"others {m.other_cores:.2f} cores, spare {m.spare_cores:.2f}, charged {m.charged:.2f}")
    assert m.other_cores == pytest.approx(0.7, rel=0.05)
    assert m.spare_cores == pytest.approx(0.1, abs=0.05)
    assert m.charged == pytest.approx((0.4 - 0.1) / 0.4, abs=0.1)
    assert tb.decode_ms > 0


def test_confident_tracking_at_30_fps_detects_twice_a_second() -> None:
    m = MachineBudget(_config(max_fps=30, detect_every_max=4), cores=2)
    tb = m.track()
    tb.observe(0.0, _result(True, step_ms=2.0), True)
    plans = []
    for i in range(1, 61):
        t = i / 30
        detect, _ = tb.plan(t, [1, 2, 3, 4])
        plans.append(detect)
        tb.observe(t, _result(detect, step_ms=2.0 if detect else 0.5, shift=i * 0.5), detect)
    print("30 fps, confident:", "".join("D" if p else "." for p in plans))
    assert tb.confident and tb.detect_every == 15
    assert sum(plans[10:]) <= 4  # 50 frames: every 15th


def test_matching_voices_to_mouths_keeps_the_detector_within_detect_every_max() -> None:
    """Mouth corners moved by the flow for 0.5 s blur the mouth signal: while a voice is
    matched, confident tracking detects every `detect_every_max` frames, not every 0.5 s,
    when that fits, and stretches it only as far as the budget needs."""
    plans: dict[bool, str] = {}
    for mouths in (False, True):
        m = MachineBudget(_config(max_fps=25, detect_every_max=4), cores=2)
        tb = m.track()
        tb.mouths = mouths
        tb.observe(0.0, _result(True, step_ms=2.0), True)
        seen = []
        for i in range(1, 51):
            t = i / 25
            detect, _ = tb.plan(t, [1, 2])
            seen.append(detect)
            tb.observe(t, _result(detect, step_ms=2.0 if detect else 0.5, shift=i * 0.5), detect)
        assert tb.confident
        plans[mouths] = "".join("D" if p else "." for p in seen)
        print(f"25 fps, confident, mouths sampled {mouths}: {plans[mouths]}")
    assert plans[False].count("D", 20) <= 3  # every 12th frame: 2-3 in the last 30
    assert plans[True].count("D", 20) >= 7  # every 4th: 7-8
    # Short of room, a track sampling mouths stretches the detector only as far as needed,
    # keeping its frame rate and facial actions (matching needs mouths at ~25 fps).
    assert tb.detect_every == 4
    tb.allocate(25 * tb.frame_cost(8, 25))
    assert (tb.detect_every, tb.rate, tb.actions_fps) == (8, 25, m.actions_fps)
    tb.allocate(25 * tb.frame_cost(12, 25) - 1)
    assert tb.detect_every == 12


def test_detect_every_max_1_keeps_the_detector_on_every_frame() -> None:
    m = MachineBudget(_config(max_fps=30, detect_every_max=1), cores=2)
    tb = m.track()
    for i in range(10):
        detect, _ = tb.plan(i / 30, [1, 2, 3, 4])
        assert detect
        tb.observe(i / 30, _result(True, step_ms=2.0, shift=i * 0.5), True)
    assert tb.confident and tb.detect_every == 1


def test_sessions_of_one_host_share_its_budget_and_report_their_rate() -> None:
    """Two sessions on a host (fake stages, frames fed as fast as they are analysed): both
    tracks plan within the host's one MachineBudget, frame events carry `budget_fps`, and a
    closed session's track leaves the budget."""
    from stream.analysis.fakes import FakeStages, fake_frames
    from stream.core.config import load_config
    from stream.live.host import SessionHost
    from stream.live.session import Subscriber

    from .test_live_host import PEOPLE, ROOT, Feed, ListSource, bounded, has_faces

    cfg = load_config(ROOT / "configs" / "default.toml", env={}).replace("audio", enabled=False)

    @bounded(30)
    async def main() -> tuple[list[Feed], int, int, bool]:
        host = SessionHost(cfg, FakeStages(cfg), pace=False)
        feeds = []
        sessions = []
        for purpose in ("first call", "second call"):
            s = await host.open(purpose, "test")
            feed = Feed()
            s.subscribe(Subscriber(feed.send, "viewer"))
            await s.attach(ListSource(fake_frames(40, PEOPLE), fps=100.0))
            feeds.append(feed)
            sessions.append(s)
        for feed in feeds:
            # One analysed frame is enough: the 40 frames play in 0.4 s and the newest frame
            # wins, so on a loaded machine only a few of them are analysed (5 timed out there).
            await feed.until(has_faces(1), 10)
        shared = all(s.budget is host.budget for s in sessions)
        tracks = len(host.budget.tracks)
        await host.close(sessions[0], "done")
        left = len(host.budget.tracks)
        await host.shutdown()
        return feeds, tracks, left, shared

    feeds, tracks, left, shared = main()
    rates = [e["metrics"]["budget_fps"] for f in feeds for e in f.of("frame")]
    print(f"tracks in the budget: {tracks}, after one session closed: {left}; budget_fps seen"
          f" {min(rates):.1f}..{max(rates):.1f}")  # fmt: skip
    assert shared and tracks == 2 and left == 1
    assert rates and all(r > 0 for r in rates)


def _with_actions(tb: TrackBudget, action_ms: float) -> None:
    """Teach a track that one face's facial actions cost `action_ms`."""
    r = _result(False, step_ms=1.0, other_ms=0.0, shift=0.0)
    faces = [dataclasses.replace(f, actions_fresh=f.number == 1) for f in r.faces]
    r = dataclasses.replace(r, faces=faces)
    r.timings_ms["actions"] = action_ms
    r.timings_ms["total"] += action_ms
    tb.observe(0.2, r, False)


def test_facial_actions_slow_down_before_the_frame_rate() -> None:
    """Landmark passes of 15 ms each: 4 faces at 2/s cost 120 ms/s. In a tight share the
    detector interval rises first, then the actions slow (to a quarter), then the rate falls;
    VideoTracks hands the planned rate to the pipeline's action scheduler."""
    m = MachineBudget(_config(max_fps=10, emotion_fps=5, detect_every_max=4), cores=2)
    tb = m.track()
    _learn(tb, detect_ms=20.0, follow_ms=2.0, face_ms=3.0)
    _with_actions(tb, 15.0)
    print(f"base {tb.base_ms.value:.1f} ms, action {tb.action_ms.value:.1f} ms per face")
    plans = []
    for share in (800.0, 280.0, 220.0, 190.0, 120.0):  # 10 fps costs 277/217/187 ms/s at k=4
        tb.allocate(share)
        plans.append((share, tb.detect_every, tb.actions_fps, round(tb.rate, 2)))
    print("share -> (k, actions/s per face, fps):", plans)
    assert plans[0][1:] == (1, 2.0, 10)  # room for everything
    assert plans[1][1:] == (4, 2.0, 10)  # the detector first
    assert plans[2][1:] == (4, 1.0, 10)  # then the facial actions
    assert plans[3][1:] == (4, 0.5, 10)
    assert plans[4][1] == 4 and plans[4][2] == 0.5 and plans[4][3] < 10  # then the rate

    stage = types.SimpleNamespace(actions=types.SimpleNamespace(scheduler=ActionScheduler(2, 1)))
    pace_actions(stage, tb.actions_fps)
    assert stage.actions.scheduler.fps == 0.5
    pace_actions(stage, None)  # a file's schedule leaves the configured rate
    assert stage.actions.scheduler.fps == 0.5


def test_expressions_slow_down_after_actions_before_the_frame_rate() -> None:
    m = MachineBudget(_config(max_fps=10, emotion_fps=5, detect_every_max=4), cores=2)
    tb = m.track()
    _learn(tb, detect_ms=20.0, follow_ms=2.0, face_ms=3.0)
    _with_actions(tb, 15.0)
    # At k=4, actions at 0.5/s: 10 fps costs 187 ms/s with expressions at 5/s, 157 at 2.5/s.
    tb.allocate(170.0)
    print(f"k {tb.detect_every}, actions {tb.actions_fps}/s, expressions {tb.emotion_fps}/s,"
          f" {tb.rate:.2f} fps")  # fmt: skip
    assert (tb.detect_every, tb.actions_fps, tb.emotion_fps, tb.rate) == (4, 0.5, 2.5, 10)
    _, chosen = tb.plan(5.0, [1, 2, 3, 4])
    assert len(chosen) == 1  # 4 faces x 2.5/s over 10 fps: one per frame
    tb.allocate(800.0)
    assert tb.emotion_fps == 5.0 and tb.actions_fps == 2.0


def test_a_cold_first_frame_does_not_hold_the_rate_down() -> None:
    """A model's first call can take seconds (pages read from disk): the next frame's cost
    replaces it, so the track is planned at its full rate from its second frame on."""
    clock, m = _machine(_config(max_fps=15, emotion_fps=5))
    tb = m.track()
    tb.observe(0.0, _result(True, step_ms=3000.0, emotion_ms=4 * 900.0, emotions=4), True)
    _feed(clock, [tb], [15], 0.5)
    cold = tb.rate
    tb.observe(0.1, _result(True, step_ms=20.0, emotion_ms=4 * 4.0, emotions=4), True)
    _feed(clock, [tb], [15], 0.5)
    print(f"rate after a cold first frame {cold:.1f}/s, after the second {tb.rate:.1f}/s")
    assert cold < 2 and tb.rate == 15
