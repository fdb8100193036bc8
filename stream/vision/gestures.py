"""Head gestures from the head-pose time series: nods (pitch swings) and shakes (yaw swings).

A swing is a movement between two turning points of one angle (found with a hysteresis of
half the smallest swing). A gesture is a run of quick alternating swings: each at least
`min_deg` and at most `max_swing_s` long, at least 2 of them for a nod (down and back up), 3
for a shake (one way, the other, back), while the other angle moves less than `cross_ratio`
times as much. A slow look down or away and back is not a gesture (its swings are too slow);
a single glance to the side and back is not a shake (two swings).

Feed it the unsmoothed pose (`HeadPoseTracker.raw`): smoothing flattens quick swings. At 10
analysed frames per second a 2.5 Hz nod has four samples per cycle, and between landmark
passes the flow-followed pose shows about 0.8-1.0 of a quick change (measured against
MediaPipe on three clips), so the thresholds are low and the strength may be underestimated.

Events are reported when the gesture ends (no further swing within `max_swing_s`), so live
they come at most that late. Words: "nodding", "shaking the head" (behaviour, not agreement).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HeadGesture:
    """One nod or shake of one face, in media time."""

    face: int
    kind: str  # "nod" or "shake"
    start: float
    end: float
    swings: int
    strength: float  # mean swing, degrees (peak to peak)

    def to_json(self) -> dict[str, object]:
        return {
            "face": self.face,
            "gesture": self.kind,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "swings": self.swings,
            "strength_deg": round(self.strength, 1),
        }


@dataclass
class _Pivot:
    v: float  # angle at the turning point
    t: float  # when it was reached
    depart: float  # the last time the angle was still near it (the next swing's start)


@dataclass
class _Axis:
    """Turning points of one angle (zigzag with hysteresis)."""

    h: float
    pivots: list[_Pivot] = field(default_factory=list)
    ext: _Pivot | None = None  # the running extreme since the last turning point
    direction: int = 0  # +1 rising, -1 falling, 0 not yet known
    lo: _Pivot | None = None  # while the direction is unknown: running min and max
    hi: _Pivot | None = None

    def add(self, t: float, v: float) -> bool:
        """Feed one sample; True when a new turning point was confirmed."""
        if self.direction == 0:
            if self.lo is None or self.hi is None:
                self.lo, self.hi = _Pivot(v, t, t), _Pivot(v, t, t)
                return False
            _near(self.lo, t, v, self.h)
            _near(self.hi, t, v, self.h)
            if v < self.lo.v:
                self.lo = _Pivot(v, t, t)
            if v > self.hi.v:
                self.hi = _Pivot(v, t, t)
            if v <= self.hi.v - self.h:
                self.pivots.append(self.hi)
                self.direction, self.ext = -1, _Pivot(v, t, t)
                return True
            if v >= self.lo.v + self.h:
                self.pivots.append(self.lo)
                self.direction, self.ext = 1, _Pivot(v, t, t)
                return True
            return False
        assert self.ext is not None
        _near(self.ext, t, v, self.h)
        if (v - self.ext.v) * self.direction > 0:
            if (v - self.ext.v) * self.direction > 0.1 * self.h:  # not mere creeping
                self.ext = _Pivot(v, t, t)
            return False
        if abs(v - self.ext.v) >= self.h:
            self.pivots.append(self.ext)
            self.direction = -self.direction
            self.ext = _Pivot(v, t, t)
            return True
        return False


def _near(p: _Pivot, t: float, v: float, h: float) -> None:
    """Keep the time the angle was last within a quarter of the hysteresis of a pivot."""
    if abs(v - p.v) <= 0.25 * h:
        p.depart = t


@dataclass
class _Face:
    pitch: _Axis
    yaw: _Axis
    samples: deque[tuple[float, float, float]]
    last_t: float = -1e18


class GestureDetector:
    """Nods and shakes per face from (media time, yaw, pitch) samples.

    Args:
        nod_min_deg: smallest pitch swing of a nod (degrees).
        shake_min_deg: smallest yaw swing of a shake.
        max_swing_s: longest swing (slower movements are looks, not gestures).
        cross_ratio: the other angle's range must stay below this share of the mean swing.
        reset_after_s: a face unseen this long starts afresh.
    """

    def __init__(
        self,
        nod_min_deg: float = 2.5,
        shake_min_deg: float = 3.0,
        max_swing_s: float = 0.8,
        cross_ratio: float = 0.7,
        reset_after_s: float = 1.0,
    ) -> None:
        if nod_min_deg <= 0 or shake_min_deg <= 0:
            raise ValueError("nod_min_deg and shake_min_deg must be > 0 degrees")
        if not 0.1 <= max_swing_s <= 3:
            raise ValueError(f"max_swing_s must be in [0.1, 3] seconds, got {max_swing_s}")
        if cross_ratio <= 0:
            raise ValueError("cross_ratio must be > 0")
        self.min_deg = {"nod": nod_min_deg, "shake": shake_min_deg}
        self.min_swings = {"nod": 2, "shake": 3}
        self.max_swing_s = max_swing_s
        self.cross_ratio = cross_ratio
        self.reset_after_s = reset_after_s
        self._faces: dict[int, _Face] = {}

    def _new(self) -> _Face:
        return _Face(
            _Axis(self.min_deg["nod"] / 2), _Axis(self.min_deg["shake"] / 2), deque(maxlen=600)
        )

    def update(self, face: int, t: float, yaw: float, pitch: float) -> list[HeadGesture]:
        """Feed one pose sample; returns the gestures of `face` that ended by now."""
        st = self._faces.get(face)
        out: list[HeadGesture] = []
        if st is not None and (t - st.last_t > self.reset_after_s or t < st.last_t):
            out = self._close(face, st, final=True)
            st = None
        if st is None:
            st = self._faces[face] = self._new()
        st.last_t = t
        st.samples.append((t, yaw, pitch))
        while st.samples and st.samples[0][0] < t - 8.0:
            st.samples.popleft()
        st.pitch.add(t, pitch)
        st.yaw.add(t, yaw)
        return out + self._close(face, st, final=False)

    def flush(self) -> list[HeadGesture]:
        """Gestures still open at the end of the media (or session)."""
        out: list[HeadGesture] = []
        for face, st in self._faces.items():
            out += self._close(face, st, final=True)
        self._faces.clear()
        return out

    def forget(self, face: int) -> None:
        self._faces.pop(face, None)

    def reset(self) -> None:
        self._faces.clear()

    def _close(self, face: int, st: _Face, final: bool) -> list[HeadGesture]:
        out = []
        for kind, axis in (("nod", st.pitch), ("shake", st.yaw)):
            g = self._run(face, st, kind, axis, final)
            if g is not None:
                out.append(g)
        return out

    def _run(self, face: int, st: _Face, kind: str, axis: _Axis, final: bool) -> HeadGesture | None:
        """The gesture in `axis`'s recent turning points, once the movement is over."""
        piv = list(axis.pivots)
        if axis.ext is not None and piv:
            piv.append(axis.ext)  # the swing in progress (a nod's return has no reversal)
        if len(piv) < 2:
            return None
        confirmed = axis.pivots[-1].t
        quiet = st.last_t - piv[-1].t > self.max_swing_s
        stale = st.last_t - confirmed > 2 * self.max_swing_s
        if not (final or quiet or stale):
            return None  # may still go on
        axis.pivots = []
        lo = self.min_deg[kind]
        best: tuple[int, int] | None = None
        i = 0
        while i < len(piv) - 1:
            j = i
            while j < len(piv) - 1 and self._quick(piv[j], piv[j + 1], lo):
                j += 1
            if j > i and (best is None or j - i >= best[1] - best[0]):
                best = (i, j)
            i = max(j, i + 1)
        if best is None or best[1] - best[0] < self.min_swings[kind]:
            return None
        a, b = best
        t0, t1 = piv[a].depart, piv[b].t
        amps = [abs(piv[k + 1].v - piv[k].v) for k in range(a, b)]
        strength = sum(amps) / len(amps)
        other = [smp[2 if kind == "shake" else 1] for smp in st.samples if t0 <= smp[0] <= t1]
        if other and max(other) - min(other) > self.cross_ratio * strength:
            return None
        return HeadGesture(face, kind, t0, t1, b - a, strength)

    def _quick(self, a: _Pivot, b: _Pivot, lo: float) -> bool:
        return abs(b.v - a.v) >= lo and 0 < b.t - a.depart <= self.max_swing_s
