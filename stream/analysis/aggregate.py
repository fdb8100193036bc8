"""Per-face and overall summaries: dominant expression, its share of visible time, timelines.

Definitions (also in the README):

* Each analysed frame at media time t stands for the interval until the next analysed frame,
  capped at `max_gap_s` (so a dropped stretch of video is not credited to the last frame seen);
  the last frame stands for `1 / fps` (capped at the media's end).
* A face's *visible time* is the sum of the intervals of the frames in which it was detected.
* The *share* of a label for a face is the time during which that label was the face's shown
  (smoothed, hysteresis-filtered) label, divided by the face's visible time. Shares of all
  labels plus "uncertain" sum to 1.
* A face's *dominant* expression is the label with the largest share ("uncertain" excluded;
  "uncertain" only when nothing else was ever shown).
* *Overall*: label times are summed across faces (person-seconds); the overall dominant
  expression is the label with the largest total, its share is that total over all faces'
  visible time.
* Mean probabilities are time-weighted means of the unsmoothed model outputs.
* *Headline*: the dominant label and its share; when "uncertain" holds at least
  `UNCERTAIN_NOTE` (20%) of the time, its share is named next to it ("neutral 11% · uncertain 79%"),
  so that a headline never claims more certainty than the data has.

Summaries (visible time, shares, dominant, mean probabilities and valence/arousal) come from
running totals, exact over the whole session. Timelines (CSV, HTML, `Analysis.timelines`) are
kept per face in typed column arrays (`stream.analysis.ladder.Series`, ~100 bytes a sample)
on a time-resolution ladder: full resolution for the last 2 minutes, 1-second buckets back to
1 hour, 10-second buckets before that (and at most `MAX_TIMELINE` points a face), so a live
session's memory stays bounded while its timeline still spans the whole session; a merged
point keeps the visible time it stands for, its bucket's prevailing label and the
time-weighted means of its values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from stream.analysis.ladder import DEFAULT_LADDER, Ladder, Series
from stream.core.labels import LABELS, UNCERTAIN
from stream.core.notices import face_name
from stream.core.types import F32, FaceSample

ALL_STATES: tuple[str, ...] = (*LABELS, UNCERTAIN)

#: Uncertain share from which headlines name it next to the dominant label.
UNCERTAIN_NOTE = 0.2


def headline(dominant: str, share: float, uncertain: float, digits: int = 0) -> str:
    """ "neutral 11% · uncertain 79%": the dominant label, plus the uncertain share when large."""
    main = f"{dominant} {100 * share:.{digits}f}%"
    if dominant != UNCERTAIN and uncertain >= UNCERTAIN_NOTE:
        return f"{main} · {UNCERTAIN} {100 * uncertain:.{digits}f}%"
    return main


@dataclass(frozen=True)
class TimelinePoint:
    """One face at one analysed frame, as kept for timelines and CSV."""

    t: float
    dt: float
    sample: FaceSample
    #: Seconds of each state (`ALL_STATES` order) the point stands for: a merged point of the
    #: ladder may hold several labels; None: all of `dt` is `sample.label`.
    states: tuple[float, ...] | None = None


#: Most timeline points kept per face after the ladder (see the module docstring); beyond it
#: the older half of a face's points is merged pairwise, so even a days-long session or a high
#: frame rate stays bounded (~3.4 MB a face) while the timeline still spans the whole session.
MAX_TIMELINE = 32_768

_STATE = {s: i for i, s in enumerate(ALL_STATES)}
#: Timeline columns: confidence, smoothed probabilities, raw probabilities, valence/arousal, box.
_CONF, _PROBS, _RAW, _VA, _BOX = 0, slice(1, 9), slice(9, 17), slice(17, 19), slice(19, 23)
_WIDTH = 23


@dataclass(frozen=True)
class MergedSample(FaceSample):
    """The sample of a timeline point that stands for several analysed frames (a ladder
    bucket). Recorded again (`add_frame`, e.g. when identity consolidation renumbers a file's
    faces) it counts as `frames` frames and `span` seconds split over the states as `states`
    says, whatever the interval to the next frame: totals survive the round trip."""

    span: float = 0.0
    states: tuple[float, ...] = ()
    frames: int = 1


def _row(s: FaceSample) -> F32:
    row = np.empty(_WIDTH, np.float32)
    row[_CONF] = s.confidence
    row[_PROBS] = s.probs
    row[_RAW] = s.raw_probs
    row[_VA] = s.valence_arousal
    row[_BOX] = s.box
    return row


def _points(number: int, series: Series) -> list[TimelinePoint]:
    """The kept points of one face as `TimelinePoint`s (made on demand from the columns);
    merged points carry a `MergedSample`."""
    t, dt, cat, v = series.columns()
    states = series.category_times().astype(np.float64).tolist()
    counts = series.counts().tolist()
    conf = v[:, _CONF].tolist()
    boxes = v[:, _BOX].astype(np.float64).tolist()
    out = []
    for i in range(len(t)):
        box = (boxes[i][0], boxes[i][1], boxes[i][2], boxes[i][3])
        args = (number, ALL_STATES[cat[i]], conf[i], v[i, _PROBS], v[i, _RAW], v[i, _VA], box)
        st = tuple(states[i])
        if counts[i] > 1:
            sample: FaceSample = MergedSample(*args, float(dt[i]), st, round(counts[i]))
        else:
            sample = FaceSample(*args)
        out.append(TimelinePoint(float(t[i]), float(dt[i]), sample, st))
    return out


@dataclass
class _FaceAcc:
    first_t: float
    last_t: float
    visible: float = 0.0
    label_time: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ALL_STATES, 0.0))
    # float64: float32 sums lose whole percents of an 8-hour session (ulp 0.002 at 2e4).
    prob_sum: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(8))
    va_sum: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(2))
    samples: int = 0
    timeline: Series | None = None


@dataclass(frozen=True)
class FaceSummary:
    """Summary of one face over the session or file."""

    number: int
    name: str
    first_seen: float
    last_seen: float
    visible_s: float
    samples: int
    dominant: str
    dominant_share: float
    shares: dict[str, float]
    mean_probabilities: dict[str, float | None]
    mean_valence: float
    mean_arousal: float

    @property
    def uncertain_share(self) -> float:
        """Share of visible time during which no label was shown."""
        return self.shares.get(UNCERTAIN, 0.0)

    def headline(self, digits: int = 0) -> str:
        return headline(self.dominant, self.dominant_share, self.uncertain_share, digits)

    def to_dict(self, va_estimated: bool) -> dict[str, Any]:
        return {
            "id": self.number,
            "label": face_name(self.number),
            "name": self.name,
            "first_seen_s": round(self.first_seen, 3),
            "last_seen_s": round(self.last_seen, 3),
            "visible_s": round(self.visible_s, 3),
            "analysed_frames": self.samples,
            "dominant": {
                "label": self.dominant,
                "share": round(self.dominant_share, 4),
                "uncertain_share": round(self.uncertain_share, 4),
            },
            "shares": {k: round(v, 4) for k, v in self.shares.items()},
            "mean_probabilities": {
                k: (None if v is None else round(v, 4)) for k, v in self.mean_probabilities.items()
            },
            "valence_arousal": {
                "valence": round(self.mean_valence, 3),
                "arousal": round(self.mean_arousal, 3),
                "estimated": va_estimated,
            },
        }


@dataclass(frozen=True)
class OverallSummary:
    """The room: expression totals across every face."""

    faces: int
    person_seconds: float
    dominant: str
    dominant_share: float
    shares: dict[str, float]

    @property
    def uncertain_share(self) -> float:
        """Share of all faces' visible time during which no label was shown."""
        return self.shares.get(UNCERTAIN, 0.0)

    def headline(self, digits: int = 0) -> str:
        return headline(self.dominant, self.dominant_share, self.uncertain_share, digits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "faces": self.faces,
            "person_seconds": round(self.person_seconds, 3),
            "dominant": {
                "label": self.dominant,
                "share": round(self.dominant_share, 4),
                "uncertain_share": round(self.uncertain_share, 4),
            },
            "shares": {k: round(v, 4) for k, v in self.shares.items()},
        }


def _dominant(label_time: dict[str, float], total: float) -> tuple[str, float, dict[str, float]]:
    shares = {k: (v / total if total > 0 else 0.0) for k, v in label_time.items()}
    named = {k: v for k, v in label_time.items() if k != UNCERTAIN}
    best = max(named, key=lambda k: named[k]) if named else UNCERTAIN
    if named.get(best, 0.0) <= 0.0:
        best = UNCERTAIN
    return best, shares[best] if total > 0 else 0.0, shares


class Aggregator:
    """Accumulates per-face samples frame by frame and summarises them at any time.

    Args:
        nominal_dt: interval credited to the last analysed frame (1 / analysis fps).
        max_gap_s: longest interval one analysed frame may stand for.
        supported: [8] mask of labels the models output (unsupported get mean probability None).
        keep_timeline: keep timelines (reports); off: summaries only.
        ladder: how timelines coarsen with age (default: `DEFAULT_LADDER` capped at
            `MAX_TIMELINE` points a face; `ladder.FULL` keeps every sample).
    """

    def __init__(
        self,
        nominal_dt: float,
        max_gap_s: float,
        supported: np.ndarray,
        keep_timeline: bool = True,
        ladder: Ladder | None = None,
    ) -> None:
        if not (nominal_dt > 0 and max_gap_s > 0):
            raise ValueError(f"nominal_dt and max_gap_s must be > 0, got {nominal_dt}, {max_gap_s}")
        self.nominal_dt = nominal_dt
        self.max_gap_s = max_gap_s
        self.supported = supported
        self.keep_timeline = keep_timeline
        self.ladder = ladder or Ladder(DEFAULT_LADDER.steps, MAX_TIMELINE)
        self.names: dict[int, str] = {}
        self._faces: dict[int, _FaceAcc] = {}
        self._pending: dict[str, tuple[float, list[FaceSample]]] = {}

    def add_frame(self, t: float, samples: list[FaceSample], stream: str = "") -> None:
        """Record the faces of one analysed frame at media time `t` (non-decreasing per stream).

        Several video streams (e.g. one per call participant) each keep their own timeline;
        face numbers are unique across them.
        """
        pending = self._pending.get(stream)
        if pending is not None:
            pt, ps = pending
            self._commit(pt, min(max(t - pt, 0.0), self.max_gap_s), ps)
        self._pending[stream] = (t, samples)

    def finish(self, end_t: float | None = None) -> None:
        """Close each stream's last frame: 1/fps, or until `end_t` if that is sooner."""
        for pt, ps in self._pending.values():
            dt = self.nominal_dt if end_t is None else min(self.nominal_dt, max(end_t - pt, 0.0))
            self._commit(pt, dt, ps)
        self._pending.clear()

    def add_point(
        self, t: float, dt: float, sample: FaceSample, states: tuple[float, ...] | None = None
    ) -> None:
        """Record one timeline point of another aggregator (e.g. renumbered): exactly `dt`
        seconds (`max_gap_s` does not cap it), split over the states as `states` says (a merged
        point's `TimelinePoint.states`). Points of one face come in time order."""
        self._commit(t, dt, [sample], states)

    def _commit(
        self,
        t: float,
        dt: float,
        samples: list[FaceSample],
        states: tuple[float, ...] | None = None,
    ) -> None:
        frame_dt, frame_states = dt, states
        for s in samples:
            dt, states, frames = frame_dt, frame_states, 1
            if isinstance(s, MergedSample):  # a ladder bucket recorded again: its own totals
                dt, states, frames = s.span, s.states, s.frames
            acc = self._faces.get(s.number)
            if acc is None:
                acc = self._faces[s.number] = _FaceAcc(first_t=t, last_t=t)
            acc.last_t = t
            acc.visible += dt
            if states is None:
                acc.label_time[s.label] += dt
            else:
                for state, seconds in zip(ALL_STATES, states, strict=True):
                    acc.label_time[state] += seconds
            acc.prob_sum += dt * s.raw_probs.astype(np.float64)
            acc.va_sum += dt * s.valence_arousal.astype(np.float64)
            acc.samples += frames
            if self.keep_timeline:
                if acc.timeline is None:
                    acc.timeline = Series(_WIDTH, len(ALL_STATES), self.ladder)
                acc.timeline.add(t, dt, _row(s), _STATE[s.label], states, frames)

    def name_of(self, number: int) -> str:
        return self.names.get(number) or face_name(number)

    def timeline(self, number: int) -> list[TimelinePoint]:
        """The face's timeline points in time order (made now from the compact columns)."""
        acc = self._faces.get(number)
        if acc is None or acc.timeline is None:
            return []
        acc.timeline.compact()
        return _points(number, acc.timeline)

    def timeline_bytes(self) -> int:
        """Bytes held by every face's timeline columns."""
        return sum(a.timeline.nbytes() for a in self._faces.values() if a.timeline is not None)

    def faces(self) -> list[FaceSummary]:
        """Per-face summaries, by face number."""
        out = []
        for number in sorted(self._faces):
            acc = self._faces[number]
            dominant, share, shares = _dominant(acc.label_time, acc.visible)
            denom = max(acc.visible, 1e-9)
            mean = acc.prob_sum / denom
            out.append(
                FaceSummary(
                    number=number,
                    name=self.name_of(number),
                    first_seen=acc.first_t,
                    last_seen=acc.last_t,
                    visible_s=acc.visible,
                    samples=acc.samples,
                    dominant=dominant,
                    dominant_share=share,
                    shares=shares,
                    mean_probabilities={
                        lab: (float(mean[i]) if self.supported[i] else None)
                        for i, lab in enumerate(LABELS)
                    },
                    mean_valence=float(acc.va_sum[0] / denom),
                    mean_arousal=float(acc.va_sum[1] / denom),
                )
            )
        return out

    def overall(self) -> OverallSummary:
        """Totals across faces (person-seconds)."""
        totals = dict.fromkeys(ALL_STATES, 0.0)
        person_s = 0.0
        for acc in self._faces.values():
            person_s += acc.visible
            for k, v in acc.label_time.items():
                totals[k] += v
        dominant, share, shares = _dominant(totals, person_s)
        return OverallSummary(len(self._faces), person_s, dominant, share, shares)
