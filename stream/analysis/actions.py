"""Facial actions of a stream: per-face means and timelines of the AU-named blendshapes.

Means and peaks are running totals over the whole session; the AU timeline is kept in typed
columns on the same time-resolution ladder as expression timelines (`stream.analysis.ladder`):
full resolution for the recent window, coarser buckets (means of their samples) further back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream.analysis.ladder import DEFAULT_LADDER, Ladder, Series
from stream.vision.blendshapes import AU_NAMES, AU_NOTES, BLENDSHAPES, NOT_MAPPED, au_vector


@dataclass
class FaceActionStats:
    """Running statistics of one face's smoothed blendshape scores (and its AU timeline)."""

    sums: np.ndarray = field(default_factory=lambda: np.zeros(len(BLENDSHAPES)))
    peaks: np.ndarray = field(default_factory=lambda: np.zeros(len(BLENDSHAPES)))
    count: int = 0
    ladder: Ladder = DEFAULT_LADDER
    series: Series | None = None  # (t, AU vector) samples, each weighing the same

    def add(self, t: float, scores: np.ndarray, keep: bool) -> None:
        self.sums += scores
        np.maximum(self.peaks, scores, out=self.peaks)
        self.count += 1
        if keep:
            if self.series is None:
                self.series = Series(len(AU_NAMES), 0, self.ladder)
            self.series.add(t, 1.0, au_vector(scores))

    @property
    def timeline(self) -> list[tuple[float, np.ndarray]]:
        """The kept (t, AU vector) samples in time order (made now from the columns)."""
        if self.series is None:
            return []
        self.series.compact()
        t, _, _, v = self.series.columns()
        return list(zip(t.tolist(), v, strict=True))

    def mean(self) -> np.ndarray:
        return self.sums / max(self.count, 1)

    def at(self, t: float, max_gap: float = 0.5) -> np.ndarray | None:
        """The AU vector recorded nearest before `t` (within `max_gap` seconds, or within its
        bucket where the timeline is coarser)."""
        if self.series is None:
            return None
        i = self.series.nearest_before(t, max_gap)
        return None if i is None else self.series.values(i)

    def to_dict(self, raw: bool) -> dict[str, object]:
        m = self.mean()
        units = au_vector(m)
        peak_units = au_vector(self.peaks)
        out: dict[str, object] = {
            "samples": self.count,
            "mean": {au: round(float(v), 4) for au, v in zip(AU_NAMES, units, strict=True)},
            "peak": {au: round(float(v), 4) for au, v in zip(AU_NAMES, peak_units, strict=True)},
        }
        if raw:
            out["blendshapes_mean"] = {
                b: round(float(v), 4) for b, v in zip(BLENDSHAPES, m, strict=True)
            }
        return out


def actions_notes() -> dict[str, object]:
    """What the AU names mean and where a mapping is weak or not offered (for reports)."""
    return {
        "source": "MediaPipe Face Landmarker blendshapes (52 ARKit-style scores, 0..1)",
        "units": dict(AU_NOTES),
        "not_mapped": dict(NOT_MAPPED),
        "notice": "Facial-action intensities, not emotions; the AU names are approximate.",
    }
