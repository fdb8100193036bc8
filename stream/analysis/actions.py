"""Facial actions of a stream: per-face means and timelines of the AU-named blendshapes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream.vision.blendshapes import AU_NAMES, AU_NOTES, BLENDSHAPES, NOT_MAPPED, au_vector

F32 = np.ndarray


@dataclass
class FaceActionStats:
    """Running statistics of one face's smoothed blendshape scores."""

    sums: np.ndarray = field(default_factory=lambda: np.zeros(len(BLENDSHAPES)))
    peaks: np.ndarray = field(default_factory=lambda: np.zeros(len(BLENDSHAPES)))
    count: int = 0
    timeline: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (t, AU vector)

    def add(self, t: float, scores: np.ndarray, keep: bool) -> None:
        self.sums += scores
        self.peaks = np.maximum(self.peaks, scores)
        self.count += 1
        if keep:
            self.timeline.append((t, au_vector(scores)))

    def mean(self) -> np.ndarray:
        return self.sums / max(self.count, 1)

    def at(self, t: float, max_gap: float = 0.5) -> np.ndarray | None:
        """The AU vector recorded nearest before `t` (within `max_gap` seconds)."""
        times = [p[0] for p in self.timeline]
        i = int(np.searchsorted(times, t, side="right")) - 1
        if 0 <= i < len(times) and t - times[i] <= max_gap:
            return self.timeline[i][1]
        return None

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
