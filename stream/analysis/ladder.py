"""Timelines in bounded memory: typed column arrays, coarser the older they are.

A `Series` holds one face's (or one stream's) samples in time order as numpy columns: time
(float64), interval (float64), an optional category (uint8, e.g. the shown label) with the
seconds of each category it stands for (float32), and float32 values (e.g. confidence,
probabilities, valence/arousal, box): about 150 bytes a sample instead of ~0.8-1.2 KB for a
dataclass holding small numpy arrays.

The *time-resolution ladder* (`Ladder`) bounds how many samples a long session keeps while the
series still spans all of it. With the default ladder:

* the most recent 2 minutes keep every sample (full resolution);
* samples older than 2 minutes are merged into 1-second buckets;
* samples older than 1 hour are merged into 10-second buckets;
* if a series still holds more than `max_points` samples (a very long session, a high frame
  rate), its older half is merged pairwise (the oldest part gets coarser again).

Buckets are aligned to multiples of their width on the media clock, so a bucket is merged once
and coarser buckets nest finer ones. A merged sample starts at its bucket's first sample (`t`),
stands for the sum of its samples' intervals (`dt`: visible time is kept exactly), keeps the
seconds of each category and shows the one that held most of them, and its values are the
interval-weighted means (so time-weighted means and per-category times over the series are kept
too: a series rebuilt from merged samples sums to the same totals). An 8-hour call at 10
analysed frames per second keeps about 1,200 + 3,480 + 2,520 samples per face (~1.1 MB), not
288,000 (~230-350 MB); after the first 2 minutes a face adds ~60 samples a minute (~9 KB),
after the first hour 6 (~1 KB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream.core.types import F32

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Ladder:
    """Which resolution samples keep as they age.

    Args:
        steps: (age_s, resolution_s) pairs: samples older than age_s (relative to the newest
            sample of the series) are merged into buckets of resolution_s. Ages and
            resolutions increase; each resolution is a whole multiple of the previous one.
        max_points: most samples a series keeps; beyond it the older half is merged pairwise.
    """

    steps: tuple[tuple[float, float], ...] = ((120.0, 1.0), (3600.0, 10.0))
    max_points: int = 32_768

    def __post_init__(self) -> None:
        prev_age, prev_res = 0.0, 0.0
        for age, res in self.steps:
            if not (age > prev_age and res > prev_res and math.isfinite(age + res)):
                raise ValueError(
                    f"ladder steps must have increasing ages and resolutions > 0, got {self.steps}"
                )
            if prev_res and abs(res / prev_res - round(res / prev_res)) > 1e-9:
                raise ValueError(
                    f"ladder resolution {res:g} s is not a multiple of the previous {prev_res:g} s"
                )
            prev_age, prev_res = age, res
        if self.max_points < 16:
            raise ValueError(f"ladder max_points must be >= 16, got {self.max_points}")


#: The default ladder (see the module docstring).
DEFAULT_LADDER = Ladder()
#: Keep every sample (files: one CSV row per analysed frame), still capped by `max_points`.
FULL = Ladder(steps=(), max_points=1 << 30)


class Series:
    """Samples in time order (non-decreasing `t`) in typed columns, coarsened by a `Ladder`.

    Args:
        width: float32 values per sample.
        categories: number of categories (0: none; else < 256).
        ladder: the resolution ladder.
    """

    def __init__(self, width: int, categories: int = 0, ladder: Ladder = DEFAULT_LADDER) -> None:
        if width < 0 or not 0 <= categories < 256:
            raise ValueError(f"bad series shape: width {width}, categories {categories}")
        self.width = width
        self.categories = categories
        self.ladder = ladder
        self.n = 0
        self._cap = 64
        self._t: F64 = np.zeros(self._cap)
        self._dt: F64 = np.zeros(self._cap)
        self._cat: U8 = np.zeros(self._cap, np.uint8)
        self._ct: F32 = np.zeros((self._cap, categories), np.float32)  # seconds per category
        self._k: F64 = np.zeros(self._cap)  # samples merged into each kept sample
        self._v: F32 = np.zeros((self._cap, width), np.float32)
        #: Per ladder step: samples before this time are merged at that step's resolution.
        self._merged: list[float] = [-math.inf] * len(ladder.steps)

    # -- writing ---------------------------------------------------------------------------
    def add(
        self,
        t: float,
        dt: float,
        values: npt.ArrayLike,
        category: int = 0,
        times: npt.ArrayLike | None = None,
        count: float = 1.0,
    ) -> None:
        """Append one sample (t not before the last one's): `dt` seconds of `category`, or of
        each category as given by `times` (a merged sample of another series)."""
        if self.n == self._cap or self.n >= self.ladder.max_points:
            self.compact()
            if self.n > self._cap * 3 // 4:
                self._grow(self._cap * 2)
        i = self.n
        self._t[i] = t
        self._dt[i] = dt
        self._cat[i] = category
        self._v[i] = values
        self._k[i] = count
        if self.categories:
            if times is None:
                self._ct[i] = 0.0
                self._ct[i, category] = dt
            else:
                self._ct[i] = times
        self.n += 1

    def compact(self) -> None:
        """Merge what the ladder says is old enough (also done when the arrays fill up)."""
        if self.n == 0:
            return
        now = float(self._t[self.n - 1])
        for k, (age, res) in enumerate(self.ladder.steps):
            cut = math.floor((now - age) / res) * res
            if cut <= self._merged[k]:
                continue
            lo = int(np.searchsorted(self._t[: self.n], self._merged[k], "left"))
            hi = int(np.searchsorted(self._t[: self.n], cut, "left"))
            if hi - lo > 1:
                keys = np.floor(self._t[lo:hi] / res)
                starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) + lo
                self._merge(lo, hi, starts)
            self._merged[k] = cut
        while self.n > self.ladder.max_points:
            half = self.n // 2
            self._merge(0, half - half % 2, np.arange(0, half - half % 2, 2))

    def _merge(self, lo: int, hi: int, starts: npt.NDArray[np.intp]) -> None:
        """Replace samples [lo, hi) by one merged sample per run beginning at `starts`."""
        m = len(starts)
        if m == hi - lo:
            return
        rel = starts - lo
        dt = self._dt[lo:hi]
        w = dt + 1e-12  # zero intervals still count (equally)
        wsum = np.add.reduceat(w, rel)
        new_dt = np.add.reduceat(dt, rel)
        new_k = np.add.reduceat(self._k[lo:hi], rel)
        new_t = self._t[starts].copy()
        new_v = (np.add.reduceat(self._v[lo:hi] * w[:, None], rel, axis=0) / wsum[:, None]).astype(
            np.float32
        )
        if self.categories:
            new_ct = np.add.reduceat(self._ct[lo:hi], rel, axis=0)
            ties = np.zeros((hi - lo, self.categories))  # zero-time samples count a little
            ties[np.arange(hi - lo), self._cat[lo:hi]] = 1e-9
            new_cat = np.argmax(new_ct + np.add.reduceat(ties, rel, axis=0), axis=1)
        else:
            new_ct = np.zeros((m, 0), np.float32)
            new_cat = np.zeros(m, np.intp)
        tail = self.n - hi
        for col in (self._t, self._dt, self._cat, self._v, self._ct, self._k):
            col[lo + m : lo + m + tail] = col[hi : self.n]
        self._t[lo : lo + m] = new_t
        self._dt[lo : lo + m] = new_dt
        self._cat[lo : lo + m] = new_cat
        self._v[lo : lo + m] = new_v
        self._ct[lo : lo + m] = new_ct
        self._k[lo : lo + m] = new_k
        self.n = lo + m + tail

    def _grow(self, cap: int) -> None:
        self._cap = cap
        self._t = np.resize(self._t, cap)
        self._dt = np.resize(self._dt, cap)
        self._k = np.resize(self._k, cap)
        self._cat = np.resize(self._cat, cap)
        v = np.zeros((cap, self.width), np.float32)
        v[: self.n] = self._v[: self.n]
        self._v = v
        ct = np.zeros((cap, self.categories), np.float32)
        ct[: self.n] = self._ct[: self.n]
        self._ct = ct

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n

    def columns(self) -> tuple[F64, F64, U8, F32]:
        """Copies of (t, dt, category, values) of every sample kept."""
        n = self.n
        return self._t[:n].copy(), self._dt[:n].copy(), self._cat[:n].copy(), self._v[:n].copy()

    def counts(self) -> F64:
        """How many added samples each kept sample stands for (a copy)."""
        out: F64 = self._k[: self.n].copy()
        return out

    def category_times(self) -> F32:
        """[n, categories] seconds of each category in every sample kept (a copy)."""
        out: F32 = self._ct[: self.n].copy()
        return out

    def resolution_at(self, t: float) -> float:
        """The bucket width of the ladder at time `t` (0: full resolution; pairwise merges
        forced by `max_points` are not counted)."""
        res = 0.0
        for (_, r), merged in zip(self.ladder.steps, self._merged, strict=True):
            if t < merged:
                res = r
        return res

    def nearest_before(self, t: float, max_gap: float) -> int | None:
        """Index of the last sample at or before `t`, if within `max_gap` (or its bucket)."""
        i = int(np.searchsorted(self._t[: self.n], t, "right")) - 1
        if i < 0:
            return None
        gap = t - float(self._t[i])
        return i if gap <= max(max_gap, self.resolution_at(float(self._t[i]))) else None

    def values(self, i: int) -> F32:
        """The values of sample `i` (a copy)."""
        out: F32 = self._v[i].copy()
        return out

    def nbytes(self) -> int:
        """Bytes held by the column arrays (capacity included)."""
        cols = (self._t, self._dt, self._cat, self._v, self._ct, self._k)
        return sum(int(c.nbytes) for c in cols)
