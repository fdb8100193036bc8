"""Per-face behaviour summaries: attention share, attention drops, blink rate, nods and shakes,
posture shares. Pure accumulation over the per-frame signals of stream/vision (head pose,
gaze, gestures, posture); behaviour words only ("looking away", "nodding", "leaning in").
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field

from stream.vision.gaze import AttentionDrop, BlinkCounter, GazeSample
from stream.vision.gestures import HeadGesture
from stream.vision.headpose import HeadPose
from stream.vision.posture import PostureSample
from stream.vision.signals import FrameSignals

#: Per-frame CSV columns kept by `FaceBehaviour.rows` (after the time).
ROW_FIELDS = (
    "head_yaw", "head_pitch", "head_roll", "attention", "gaze_x", "gaze_y", "lean",
    "posture_visible", "shoulders_raised", "hand_to_face",
)  # fmt: skip


@dataclass
class FaceBehaviour:
    """Everything accumulated for one face; time-weighted by the interval each frame stands
    for (capped by `max_gap_s`, as the expression timelines)."""

    face: int
    max_gap_s: float = 0.5
    seen_s: float = 0.0
    attending_s: float = 0.0
    drops: list[AttentionDrop] = field(default_factory=list)
    gestures: list[HeadGesture] = field(default_factory=list)
    blinks: BlinkCounter = field(default_factory=BlinkCounter)
    posture_s: float = 0.0
    posture_calls: int = 0  # frames where the pose model ran for this face...
    posture_visible_calls: int = 0  # ...and found the upper body
    leaning_in_s: float = 0.0
    leaning_back_s: float = 0.0
    shoulders_seen_s: float = 0.0
    shoulders_raised_s: float = 0.0
    hands_seen_s: float = 0.0
    hand_to_face_s: float = 0.0
    activity_sum: float = 0.0
    activity_n: int = 0
    yaw_sum: float = 0.0
    pitch_sum: float = 0.0
    posture_hold_s: float = 2.0
    keep_rows: bool = True  # keep per-frame rows for the CSV and the report's lanes
    rows: list[tuple[float, ...]] = field(default_factory=list)  # see ROW_FIELDS
    _last_t: float | None = None
    _posture: tuple[float, PostureSample] | None = None

    def add_frame(
        self,
        t: float,
        pose: HeadPose,
        gaze: GazeSample,
        posture: PostureSample | None = None,
    ) -> None:
        """One analysed frame of this face."""
        dt = 0.0 if self._last_t is None else min(max(t - self._last_t, 0.0), self.max_gap_s)
        if posture is not None:
            self._posture = (t, posture)
            self.posture_calls += 1
            self.posture_visible_calls += int(posture.visible)
        elif self._posture is not None and 0 <= t - self._posture[0] <= self.posture_hold_s:
            posture = self._posture[1]  # posture runs a few times a second: it stands until then
        self._last_t = t
        self.seen_s += dt
        self.attending_s += dt * gaze.attention
        self.yaw_sum += dt * pose.yaw
        self.pitch_sum += dt * pose.pitch
        if self.keep_rows:
            nan = float("nan")
            lean = posture.lean if posture is not None and posture.lean is not None else nan

            def flag(v: bool | None) -> float:
                return nan if v is None else float(v)

            vis = flag(posture.visible) if posture is not None else nan
            up = flag(posture.shoulders_raised) if posture is not None else nan
            hand = flag(posture.hand_to_face) if posture is not None else nan
            g = (gaze.attention, gaze.x, gaze.y)
            self.rows.append((t, pose.yaw, pose.pitch, pose.roll, *g, lean, vis, up, hand))
        if posture is not None and posture.visible:
            self.posture_s += dt
            if posture.lean is not None:
                self.leaning_in_s += dt if posture.lean > 0.1 else 0.0
                self.leaning_back_s += dt if posture.lean < -0.1 else 0.0
            if posture.shoulders_raised is not None:
                self.shoulders_seen_s += dt
                self.shoulders_raised_s += dt if posture.shoulders_raised else 0.0
            if posture.hand_to_face is not None:
                self.hands_seen_s += dt
                self.hand_to_face_s += dt if posture.hand_to_face else 0.0
            if posture.activity is not None:
                self.activity_sum += posture.activity
                self.activity_n += 1

    def row_at(self, t: float) -> dict[str, float] | None:
        """The CSV cells of the last row at or before `t` (None before the first)."""
        i = bisect.bisect_right(self.rows, (t, float("inf"))) - 1
        if i < 0:
            return None
        return dict(zip(ROW_FIELDS, self.rows[i][1:], strict=True))

    def merge(self, other: FaceBehaviour) -> None:
        """Fold another tracklet of the same person into this one (identity consolidation)."""
        for name in (
            "seen_s", "attending_s", "posture_s", "leaning_in_s", "leaning_back_s",
            "shoulders_seen_s", "shoulders_raised_s", "hands_seen_s", "hand_to_face_s",
            "activity_sum", "yaw_sum", "pitch_sum",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.activity_n += other.activity_n
        self.posture_calls += other.posture_calls
        self.posture_visible_calls += other.posture_visible_calls
        self.drops = sorted(self.drops + other.drops, key=lambda d: d.start)
        self.gestures = sorted(self.gestures + other.gestures, key=lambda g: g.start)
        self.rows = sorted(self.rows + other.rows)
        b, o = self.blinks, other.blinks
        b.samples, b.shut, b.events = b.samples + o.samples, b.shut + o.shut, b.events + o.events
        firsts = [x for x in (b.first, o.first) if x is not None]
        lasts = [x for x in (b.last, o.last) if x is not None]
        b.first = min(firsts) if firsts else None
        b.last = max(lasts) if lasts else None

    def add_eyes(self, t: float, openness: float) -> None:
        self.blinks.add(t, openness)

    def add_drop(self, drop: AttentionDrop) -> None:
        self.drops.append(drop)

    def add_gesture(self, gesture: HeadGesture) -> None:
        self.gestures.append(gesture)

    def summary(self) -> dict[str, object]:
        """The JSON per-face summary (shares of seen time; None where never visible)."""

        def share(part: float, whole: float) -> float | None:
            return round(part / whole, 3) if whole > 0 else None

        minutes = self.seen_s / 60.0
        nods = [g for g in self.gestures if g.kind == "nod"]
        shakes = [g for g in self.gestures if g.kind == "shake"]
        rate = self.blinks.rate_per_min()
        return {
            "attention_share": share(self.attending_s, self.seen_s),
            "looking_away_drops": len(self.drops),
            "looking_away_s": round(sum(d.end - d.start for d in self.drops), 2),
            "mean_head_yaw": round(self.yaw_sum / self.seen_s, 1) if self.seen_s else None,
            "mean_head_pitch": round(self.pitch_sum / self.seen_s, 1) if self.seen_s else None,
            "nods": len(nods),
            "shakes": len(shakes),
            "nods_per_min": round(len(nods) / minutes, 2) if minutes > 0 else None,
            "shakes_per_min": round(len(shakes) / minutes, 2) if minutes > 0 else None,
            "blink_rate_per_min": None if rate is None else round(rate, 1),
            "blink_method": self.blinks.method,
            # Of the pose model's looks at this face (it runs every few seconds per face).
            "posture_visible_share": share(self.posture_visible_calls, self.posture_calls),
            "leaning_in_share": share(self.leaning_in_s, self.posture_s),
            "leaning_back_share": share(self.leaning_back_s, self.posture_s),
            "shoulders_raised_share": share(self.shoulders_raised_s, self.shoulders_seen_s),
            "hand_to_face_share": share(self.hand_to_face_s, self.hands_seen_s),
            "gesture_activity": (
                round(self.activity_sum / self.activity_n, 3) if self.activity_n else None
            ),
        }


class BehaviourSummary:
    """`FaceBehaviour` of every face of a stream or file, plus the call's attention."""

    def __init__(self, max_gap_s: float = 0.5, keep_rows: bool = True) -> None:
        if max_gap_s <= 0:
            raise ValueError("max_gap_s must be > 0")
        self.max_gap_s = max_gap_s
        self.keep_rows = keep_rows
        self.faces: dict[int, FaceBehaviour] = {}

    def face(self, number: int) -> FaceBehaviour:
        fb = self.faces.get(number)
        if fb is None:
            fb = self.faces[number] = FaceBehaviour(
                number, self.max_gap_s, keep_rows=self.keep_rows
            )
        return fb

    def join(self, mapping: dict[int, int]) -> None:
        """Apply identity consolidation: face `old` becomes `mapping[old]` (merged; numbers
        may swap; unmapped faces keep theirs); events carry the new numbers."""
        out: dict[int, FaceBehaviour] = {}
        for old, fb in sorted(self.faces.items()):
            new = mapping.get(old, old)
            fb.face = new
            fb.drops = [dataclasses.replace(d, face=new) for d in fb.drops]
            fb.gestures = [dataclasses.replace(g, face=new) for g in fb.gestures]
            target = out.get(new)
            if target is None:
                out[new] = fb
            else:
                target.merge(fb)
        self.faces = out

    def add(self, t: float, frame: FrameSignals) -> None:
        """One analysed frame's signals (and the events that ended on it)."""
        for number, fs in frame.faces.items():
            fb = self.face(number)
            fb.add_frame(t, fs.pose, fs.gaze, fs.posture)
            if fs.eyes is not None:
                fb.add_eyes(t, fs.eyes.openness)
        self.add_events(frame)

    def add_events(self, frame: FrameSignals) -> None:
        """Gestures and attention drops (also those of `BehaviourSignals.flush`)."""
        for g in frame.gestures:
            self.face(g.face).add_gesture(g)
        for d in frame.drops:
            self.face(d.face).add_drop(d)

    def attention_now(self, samples: dict[int, GazeSample]) -> float | None:
        """The call's attention on one frame: mean over its faces (None without faces)."""
        if not samples:
            return None
        return sum(s.attention for s in samples.values()) / len(samples)

    def summary(self) -> dict[str, dict[str, object]]:
        return {str(n): fb.summary() for n, fb in sorted(self.faces.items())}
