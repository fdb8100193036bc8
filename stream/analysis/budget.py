"""The live frame budget: how much analysis each frame may get, adapted to measured times.

`MachineBudget` (one per process, the session host's) shares the machine's inference time
across every live video track: each track's `TrackBudget` (its `FrameScheduler`) plans its
frames within a fair share of it, paces the track, and takes turns on the inference threads
oldest-first.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from stream.analysis.schedule import TrackingJudge
from stream.core.config import Config
from stream.vision.pipeline import FrameResult


@dataclass
class _Ema:
    value: float = 0.0
    seen: bool = False

    def add(self, x: float, alpha: float = 0.2) -> None:
        self.value = x if not self.seen else self.value + alpha * (x - self.value)
        self.seen = True


@dataclass
class _Cost(_Ema):
    """A stage's measured ms per call, smoothed; the lower of the first two measurements
    starts it. A model's first call (pages read from disk, first-run allocations) can take
    a hundred times its usual time: taken as the cost, it planned a track at 2.7 analysed
    frames per second, and at that rate the average took a dozen seconds to come down."""

    calls: int = 0

    def add(self, x: float, alpha: float = 0.2) -> None:
        self.calls += 1
        if self.calls == 2:
            self.value = min(self.value, x)
        else:
            super().add(x, alpha)


#: A track that received no frame for this long no longer takes a share of the machine.
IDLE_S = 2.0
#: How often the shares are recomputed (seconds).
REFRESH_S = 0.25
#: The lowest analysed rate planned for a track (below it every stream still gets turns).
MIN_FPS = 1.0
#: With confident tracking the detector runs every `live.detect_every_max` frames, or less
#: often down to once per this many seconds at high frame rates (new faces are found within
#: it; while mouths are sampled for voice matching, only as far as the budget needs);
#: `live.detect_every_max = 1` keeps it on every frame.
CONFIDENT_DETECT_S = 0.5
#: Under load each face's facial actions slow down to this share of `actions.fps` (after the
#: detector interval is raised, before the frame rate is lowered).
ACTIONS_FLOOR = 0.25
#: ...then each face's expression slows to this share of `live.emotion_fps`.
EMOTION_FLOOR = 0.5


class TrackBudget:
    """One live video track's share of a `MachineBudget`; its `FrameScheduler`.

    Costs are measured on the track's own frames (detector + tracker, optical flow, each
    expression, each face's facial actions, and the rest of a frame: smoothing, behaviour
    signals, and, when the session reports the whole occupancy, conversion and recording).
    Within its share the track runs at `want_fps` if that fits, raising the detector interval
    first (up to `live.detect_every_max`), then slowing facial actions (down to
    `ACTIONS_FLOOR` of `actions.fps`: `actions_fps`, applied by VideoTracks), then each
    face's expressions (down to `EMOTION_FLOOR` of `live.emotion_fps`), then lowering its
    rate. When tracking is confident (the detector keeps finding the faces the optical
    flow followed) the detector runs every `live.detect_every_max` frames even when there is
    room, or every `CONFIDENT_DETECT_S` seconds at high rates (every 15th frame at 30 fps),
    except while `mouths` (a voice is matched to mouths): then every `live.detect_every_max`
    frames when that fits, stretched only as far as needed before anything else slows, since
    mouth corners moved by the flow for longer blur the mouth signal (measured on the
    two-speaker live test: the heard tile's face named for 57-81% of voiced time with the
    detector every 12th frame at 25 fps, 65-92% every 4th).
    Each face's expression follows the planned `emotion_fps`, spread over the frames (about the
    average number due per frame, and what fits the frame's time), oldest first. The track
    is paced in its media time (`due`, `took`).
    """

    def __init__(self, machine: MachineBudget) -> None:
        self.machine = machine
        live = machine.live
        self.want_fps = live.max_fps  # the session may raise it (mouth sampling for voices)
        self.mouths = False  # the session sets it while a voice is matched to mouths
        self.rate = live.max_fps  # planned analysed frames per second
        self.share_ms = 1000.0  # worker ms per second this track may use (decoding included)
        self.decode_ms = 0.0  # of which decoding its received frames (charged part)
        self.detect_every = 1
        self.judge = TrackingJudge()
        self.detect_ms = _Cost()
        self.follow_ms = _Cost()
        self.face_ms = _Cost()
        self.action_ms = _Cost()  # one face's facial actions (landmarks + blendshapes)
        self.actions_fps = machine.actions_fps  # planned facial actions per face per second
        self.emotion_fps = machine.live.emotion_fps  # planned expressions per face per second
        self.base_ms = _Cost()  # everything else of an analysed frame
        self.faces = 0
        self.received = 0
        self.recv_fps = 0.0
        self.last_received = -math.inf
        self._recv_mark = 0
        self._since_detect = 0
        self._last_emotion: dict[int, float] = {}
        self._parts_ms = 0.0  # detector/flow + expressions of the last observed frame
        self._occupancy_reported = False
        self.last_turn = -math.inf  # when the track last had a turn on the inference threads
        self._next_t: float | None = None  # media time the next analysed frame is due
        self._last_t = -math.inf
        self.skipped = 0  # frames skipped by the pacing (`due`)

    # -- costs ---------------------------------------------------------------------------
    def frame_cost(
        self,
        k: int,
        fps: float,
        actions_fps: float | None = None,
        emotion_fps: float | None = None,
    ) -> float:
        """Estimated worker ms of one analysed frame at `fps` with the detector every k frames,
        each face's facial actions `actions_fps` and its expression `emotion_fps` times a
        second (default: as planned)."""
        det = self.detect_ms.value
        follow = self.follow_ms.value if self.follow_ms.seen else 0.2 * det
        step = follow + max(det - follow, 0.0) / k
        e = self.emotion_fps if emotion_fps is None else emotion_fps
        share = min(1.0, e / max(fps, 1e-6))
        a = self.actions_fps if actions_fps is None else actions_fps
        passes = min(self.faces * a / max(fps, 1e-6), self.machine.actions.per_frame)
        actions = passes * self.action_ms.value
        return self.base_ms.value + step + self.faces * self.face_ms.value * share + actions

    @property
    def confident(self) -> bool:
        """The detector keeps finding the faces the optical flow followed."""
        return self.judge.confident

    def allocate(self, share_ms: float) -> None:
        """Plan the rate and detector interval within a share (worker ms per second)."""
        live = self.machine.live
        self.share_ms = share_ms
        room = share_ms - self.decode_ms
        want = self.want_fps
        top = live.detect_every_max
        k0 = top if self.confident else 1
        if self.confident and top > 1:  # every CONFIDENT_DETECT_S of media time...
            top = max(top, round(want * CONFIDENT_DETECT_S))
            if not self.mouths:  # (sampling mouths: the least stretch that fits, from k0 up)
                k0 = top
        full, e_full = self.machine.actions_fps, live.emotion_fps
        floor, e_floor = full * ACTIONS_FLOOR, e_full * EMOTION_FLOOR
        plans = [(k, full, e_full) for k in range(k0, top + 1)]
        plans += [(top, full / 2, e_full), (top, floor, e_full), (top, floor, e_floor)]
        for k, a, e in plans:
            if want * self.frame_cost(k, want, a, e) <= room:
                self.detect_every, self.actions_fps, self.emotion_fps, self.rate = k, a, e, want
                return
        self.detect_every, self.actions_fps, self.emotion_fps = top, floor, e_floor
        lo, hi = min(MIN_FPS, want), want
        for _ in range(30):
            mid = (lo + hi) / 2
            if mid * self.frame_cost(top, mid) <= room:
                lo = mid
            else:
                hi = mid
        self.rate = lo

    @property
    def frame_ms(self) -> float:
        """Worker ms an analysed frame of this track may take."""
        return max(self.share_ms - self.decode_ms, 0.0) / max(self.rate, 1e-6)

    # -- FrameScheduler ----------------------------------------------------------------------
    def plan(self, t: float, faces: list[int]) -> tuple[bool, set[int]]:
        """(run the detector?, faces whose expression to compute) for the frame at media time t."""
        self.machine.refresh()
        detect = self._since_detect + 1 >= self.detect_every or not faces
        step = self.detect_ms.value if detect else self.follow_ms.value
        room = self.frame_ms - self.base_ms.value - step
        per_face = max(self.face_ms.value, 0.1)
        fit = max(1, int(room // per_face)) if self.face_ms.seen else len(faces)
        # Spread the expressions over the frames (a frame with every face's is a latency
        # spike): about as many per frame as the faces need at emotion_fps on average.
        emotion_fps = self.emotion_fps
        fit = min(fit, max(1, math.ceil(len(faces) * emotion_fps / max(self.rate, 1e-6))))
        period = 1.0 / emotion_fps
        due = sorted(
            (n for n in faces if t - self._last_emotion.get(n, -1e9) >= period - 1e-6),
            key=lambda n: self._last_emotion.get(n, -1e9),
        )
        return detect, set(due[:fit])

    def observe(self, t: float, result: FrameResult, detected: bool) -> None:
        """Learn the costs from a finished frame; judge the tracking on detector frames."""
        ms = result.timings_ms
        step = ms.get("detect" if detected else "flow", 0.0) + ms.get("track", 0.0)
        (self.detect_ms if detected else self.follow_ms).add(step)
        emotion = ms.get("emotion", 0.0)
        if result.emotions:
            self.face_ms.add(emotion / result.emotions)
        actions = ms.get("actions", 0.0)
        passes = sum(1 for f in result.faces if f.actions_fresh)
        if passes:
            self.action_ms.add(actions / passes)
        self._parts_ms = step + emotion + actions
        if not self._occupancy_reported:
            self.base_ms.add(max(ms.get("total", 0.0) - self._parts_ms, 0.0))
        self._since_detect = 0 if detected else self._since_detect + 1
        if self.judge.observe(result, detected):
            self.allocate(self.share_ms)  # act on confidence now, not at the next refresh
        self.faces = len(result.faces)
        for f in result.faces:
            if f.fresh:
                self._last_emotion[f.number] = t

    # -- the session's side -------------------------------------------------------------------
    def receive(self, now: float | None = None) -> None:
        """A frame arrived (decoded) on this track."""
        self.received += 1
        self.last_received = self.machine.clock() if now is None else now
        self.machine.received(self)

    def occupied(self, ms: float) -> None:
        """The worker ms the last frame really took (conversion and recording included)."""
        self._occupancy_reported = True
        self.base_ms.add(max(ms - self._parts_ms, 0.0))
        self.machine.busy_ms += ms

    @property
    def pace_fps(self) -> float:
        """The rate the track is paced at: its planned rate over `live.budget_utilisation`
        (frames are planned to fill that share of the machine; the turns on the inference
        threads keep the streams fair when they all run faster), at most `want_fps`."""
        return min(self.want_fps, self.rate / self.machine.live.budget_utilisation)

    def due(self, t: float) -> bool:
        """Whether the frame at media time `t` is analysed: the track is paced at `pace_fps`
        of its media time, frames arriving early (by more than a quarter period) are skipped
        and a later one is taken instead; nothing waits, so a taken frame starts at once."""
        self.machine.refresh()
        if self._next_t is None or t < self._last_t:  # the first frame, or a new media clock
            return True
        return t >= self._next_t - 0.25 / max(self.pace_fps, 1e-6)

    def took(self, t: float) -> None:
        """The frame at media time `t` is analysed: the next is due one period later (catching
        up at most half a period after a late one)."""
        period = 1.0 / max(self.pace_fps, 1e-6)
        if self._next_t is None or t < self._last_t:
            self._next_t = t + period
        else:
            self._next_t = max(self._next_t + period, t + period / 2)
        self._last_t = t

    def close(self) -> None:
        """The track ended: it takes no share any more."""
        self.machine.remove(self)


class MachineBudget:
    """The process's analysis time, shared by every live video track (the session host owns
    one; each track's scheduler is `track()`).

    Capacity: `workers` inference threads (`live.workers`; 0: one per core) busy
    `live.budget_utilisation` of each second, less the decoding of received frames that lands
    on the cores inference uses: decoder CPU
    per received frame is measured, and so are the cores inference really keeps busy (its CPU
    per ms of a worker's wall time), those of the event loop and those other processes of the
    machine use; decoding beyond the cores they leave spare is charged. Shares are fair in
    analysed frames per second: every active track gets the same rate (a stream that wants
    less leaves the rest to the others), its share being what that rate costs it, decoding
    included; within it the track plans its detector interval (`TrackBudget`).
    Turns on the inference threads go oldest-first: the track served least recently.

    Args:
        config: `live` budget settings; `runtime.intra_op_threads` (threads of one inference,
            the cores it is assumed to keep busy until measured).
        cpu_s: cumulative CPU seconds of the process by part: "decode" (received video),
            "inference" (the inference threads and their native pools), "loop" (the event
            loop), optionally "others" (every other process of the machine); e.g.
            stream/live/host.py `ThreadCpu.budget_parts`. None: decoding is not charged.
        cores: CPU cores of the process (default: its CPU affinity).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        config: Config,
        cpu_s: Callable[[], Mapping[str, float]] | None = None,
        cores: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.live = config.live
        self.actions = config.actions
        #: Facial actions per face per second when there is room (0: off).
        self.actions_fps = config.actions.fps if config.actions.enabled else 0.0
        self.cores = cores or len(os.sched_getaffinity(0))
        if self.cores < 1:
            raise ValueError("cores must be >= 1")
        #: Inference threads shared by every track (`live.workers`, 0: one per core).
        self.workers = self.live.workers or self.cores
        threads = config.runtime.intra_op_threads or self.cores
        self.inference_cores = _Ema(float(min(threads, self.cores)))  # per busy worker
        self.loop_cores = 0.0
        self.other_cores = 0.0  # other processes of the machine
        #: Cores the inference threads and the event loop leave to decoding.
        self.spare_cores = max(self.cores - self.workers * self.inference_cores.value, 0)
        self.cpu_s = cpu_s
        self.clock = clock
        self.tracks: list[TrackBudget] = []
        self.decode_ms = _Ema()  # decoder CPU ms per received frame
        self.decode_load = 0.0  # decoder cores in use
        self.charged = 0.0  # share of decoding charged against the inference threads
        self._lock = threading.Lock()
        self._refreshed = -math.inf
        self._received = 0
        self._received_mark = 0
        self._cpu_mark: dict[str, float] | None = None
        self.busy_ms = 0.0  # worker ms the tracks reported (TrackBudget.occupied)
        self._busy_mark = 0.0
        self._free = self.workers
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def capacity_ms(self) -> float:
        """Inference-thread ms per second the analysis may use, decoding not yet taken off."""
        return 1000.0 * self.workers * self.live.budget_utilisation

    def track(self) -> TrackBudget:
        """A new track's scheduler (a `SchedulerFactory`)."""
        tb = TrackBudget(self)
        with self._lock:
            self.tracks.append(tb)
        self.refresh(force=True)
        return tb

    def remove(self, tb: TrackBudget) -> None:
        with self._lock:
            if tb in self.tracks:
                self.tracks.remove(tb)
        self.refresh(force=True)

    def received(self, tb: TrackBudget) -> None:
        self._received += 1
        if tb not in self.tracks:  # a closed track that receives again
            with self._lock:
                self.tracks.append(tb)

    def refresh(self, force: bool = False) -> None:
        """Re-measure decoding and received rates and re-plan every track's share (at most every
        `REFRESH_S` unless forced)."""
        now = self.clock()
        with self._lock:
            dt = now - self._refreshed
            if not force and dt < REFRESH_S:
                return
            self._refreshed = now
            if math.isfinite(dt) and dt >= REFRESH_S:
                self._measure(dt)
            self._share(now)

    def _measure(self, dt: float) -> None:
        frames = self._received - self._received_mark
        self._received_mark = self._received
        busy, self._busy_mark = self.busy_ms - self._busy_mark, self.busy_ms
        if self.cpu_s is not None:
            cpu = dict(self.cpu_s())
            if self._cpu_mark is not None:
                d = {k: max(v - self._cpu_mark.get(k, v), 0.0) * 1e3 for k, v in cpu.items()}
                if frames > 0:
                    self.decode_ms.add(d.get("decode", 0.0) / frames)
                if busy >= 50.0:  # CPU ms per worker ms: how many cores an inference uses
                    self.inference_cores.add(min(d.get("inference", 0.0) / busy, self.cores))
                self.loop_cores = d.get("loop", 0.0) / 1e3 / dt
                self.other_cores = d.get("others", 0.0) / 1e3 / dt
            self._cpu_mark = cpu
        used = self.workers * self.inference_cores.value + self.loop_cores + self.other_cores
        self.spare_cores = max(self.cores - used, 0.0)
        for tb in self.tracks:
            fps = (tb.received - tb._recv_mark) / dt
            tb._recv_mark = tb.received
            tb.recv_fps = fps if tb.recv_fps == 0.0 else tb.recv_fps + 0.5 * (fps - tb.recv_fps)
        self.decode_load = sum(t.recv_fps for t in self.tracks) * self.decode_ms.value / 1e3
        over = max(self.decode_load - self.spare_cores, 0.0)
        self.charged = over / self.decode_load if self.decode_load > 0 else 0.0

    def _share(self, now: float) -> None:
        """Fair shares of the capacity: every active track gets the same analysed rate (at
        most what it wants), its share being what that rate costs it with the detector as rare
        as allowed, plus its decoding; what no track needs is spread evenly (it lets them
        detect more often)."""
        active = [t for t in self.tracks if now - t.last_received <= IDLE_S]
        for tb in self.tracks:
            tb.decode_ms = tb.recv_fps * self.decode_ms.value * self.charged
        if not active:
            return
        top = self.live.detect_every_max

        floor = self.actions_fps * ACTIONS_FLOOR
        e_floor = self.live.emotion_fps * EMOTION_FLOOR

        def need(tb: TrackBudget, fps: float) -> float:
            r = min(fps, tb.want_fps)
            return tb.decode_ms + r * tb.frame_cost(top, max(r, 1e-6), floor, e_floor)

        hi = max(t.want_fps for t in active)
        if sum(need(t, hi) for t in active) > self.capacity_ms:
            lo = 0.0
            for _ in range(30):
                mid = (lo + hi) / 2
                if sum(need(t, mid) for t in active) <= self.capacity_ms:
                    lo = mid
                else:
                    hi = mid
            hi = lo
        shares = [need(t, hi) for t in active]
        spare = max(self.capacity_ms - sum(shares), 0.0) / len(active)
        for tb, share in zip(active, shares, strict=True):
            tb.allocate(share + spare)
        for tb in self.tracks:
            if tb not in active:
                tb.allocate(self.capacity_ms / (len(active) + 1))

    # -- turns on the inference threads ---------------------------------------------------------
    @contextlib.asynccontextmanager
    async def turn(self, since: float) -> AsyncIterator[None]:
        """Hold one of the `live.workers` inference turns; waiting turns are granted
        oldest-first by `since` (the session passes when the track last had a turn: the
        track served least recently goes first)."""
        await self._acquire(since)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, since: float) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (since, next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # granted as it was cancelled: hand the turn on
            raise

    def _release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1

    @property
    def waiting(self) -> int:
        """Tracks waiting for a turn."""
        return sum(1 for *_, f in self._waiters if not f.done())
