"""A speaker's decided prosody reports in float64 blocks: ~200 bytes a report instead of ~770.

`VoiceTimeline` stands in for the `list[tuple[ProsodyReport, ActiveSpeaker]]` a voice track
keeps for summaries and reports (one report every `audio.hop_s`, 4 a second by default, about
14,400 an hour per track): `append`, `extend`, `clear`, `len`, iteration and indexing behave like
the list's, and the (report, match) pairs are made again on demand, equal to those appended
(values kept as float64, None as NaN; the face-match scores in a ragged (face, score) block).
Every report is kept (speech time is the number of speaking reports times the hop), so
summaries are unchanged; an 8-hour track holds ~23 MB instead of ~90 MB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import overload

import numpy as np
import numpy.typing as npt

from stream.analysis.speaker import ActiveSpeaker
from stream.voice.prosody import FEATURES, ProsodyReport

Pair = tuple[ProsodyReport, ActiveSpeaker]

_OPTIONAL = (
    "f0_median_hz",
    "f0_range_st",
    "f0_var_st",
    "voicing",
    "rate_per_s",
    "mean_pause_s",
    "vocal_arousal_heuristic",
)
_PLAIN = ("window_s", "speech_ratio", "energy_dbfs", "pause_ratio")
#: Row layout: t, match t, speaking, match speaking, pauses, face (-1: None), confidence, the
#: plain values, the optional ones (NaN: None), the z-scores (NaN: None), number of scores.
_O, _Z, _NS = (
    7 + len(_PLAIN),
    7 + len(_PLAIN) + len(_OPTIONAL),
    7 + len(_PLAIN) + len(_OPTIONAL) + len(FEATURES),
)
WIDTH = _NS + 1
CHUNK = 256  # rows gathered as Python tuples before they become one float64 block


def _f(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else x


class VoiceTimeline:
    """A list-like, compact store of (ProsodyReport, ActiveSpeaker) pairs in arrival order."""

    def __init__(self, items: Iterable[Pair] = ()) -> None:
        self._blocks: list[npt.NDArray[np.float64]] = []  # [CHUNK, WIDTH] each
        self._score_blocks: list[npt.NDArray[np.float64]] = []  # [k, 2] (face, score)
        self._rows: list[tuple[float, ...]] = []  # not yet in a block
        self._scores: list[tuple[float, float]] = []
        self.extend(items)

    # -- writing ---------------------------------------------------------------------------
    def append(self, item: Pair) -> None:
        report, active = item
        z = report.z
        self._rows.append(
            (
                report.t,
                active.t,
                float(report.speaking),
                float(active.speaking),
                float(report.pauses),
                -1.0 if active.face is None else float(active.face),
                float(active.confidence),
                *(float(getattr(report, k)) for k in _PLAIN),
                *(_f(getattr(report, k)) for k in _OPTIONAL),
                *(_f(z.get(k)) for k in FEATURES),
                float(len(active.scores)),
            )
        )
        self._scores.extend((float(f), float(v)) for f, v in active.scores.items())
        if len(self._rows) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._blocks.append(np.array(self._rows, np.float64).reshape(-1, WIDTH))
            self._score_blocks.append(np.array(self._scores, np.float64).reshape(-1, 2))
            self._rows, self._scores = [], []

    def extend(self, items: Iterable[Pair]) -> None:
        for item in items:
            self.append(item)

    def clear(self) -> None:
        self._blocks.clear()
        self._score_blocks.clear()
        self._rows, self._scores = [], []

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(b) for b in self._blocks) + len(self._rows)

    def __bool__(self) -> bool:
        return bool(self._blocks or self._rows)

    def _parts(self) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
        """(rows, their scores) per block, the rows not yet in a block last."""
        pending = (
            np.array(self._rows, np.float64).reshape(-1, WIDTH),
            np.array(self._scores, np.float64).reshape(-1, 2),
        )
        return [*zip(self._blocks, self._score_blocks, strict=True), pending]

    @staticmethod
    def _make(
        rows: npt.NDArray[np.float64], scores: npt.NDArray[np.float64], lo: int, hi: int
    ) -> list[Pair]:
        """The pairs of rows [lo, hi) of one block."""
        counts = rows[:, _NS].astype(np.int64)
        ends = np.cumsum(counts)
        starts = (ends - counts).tolist()
        ends_l = ends.tolist()
        score_list = scores.tolist()
        out: list[Pair] = []
        for i, r in enumerate(rows[lo:hi].tolist(), start=lo):
            opt = [None if x != x else x for x in r[_O:_Z]]  # NaN -> None
            report = ProsodyReport(
                t=r[0],
                window_s=r[7],
                speech_ratio=r[8],
                speaking=r[2] != 0.0,
                f0_median_hz=opt[0],
                f0_range_st=opt[1],
                f0_var_st=opt[2],
                voicing=opt[3],
                energy_dbfs=r[9],
                rate_per_s=opt[4],
                pause_ratio=r[10],
                pauses=int(r[4]),
                mean_pause_s=opt[5],
                z={k: (None if x != x else x) for k, x in zip(FEATURES, r[_Z:_NS], strict=True)},
                vocal_arousal_heuristic=opt[6],
            )
            face = int(r[5])
            pairs = score_list[starts[i] : ends_l[i]]
            active = ActiveSpeaker(
                r[1], None if face < 0 else face, r[6], r[3] != 0.0, {int(f): v for f, v in pairs}
            )
            out.append((report, active))
        return out

    def __iter__(self) -> Iterator[Pair]:
        for rows, scores in self._parts():
            yield from self._make(rows, scores, 0, len(rows))

    @overload
    def __getitem__(self, index: int) -> Pair: ...

    @overload
    def __getitem__(self, index: slice) -> list[Pair]: ...

    def __getitem__(self, index: int | slice) -> Pair | list[Pair]:
        if isinstance(index, slice):
            return list(self)[index]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("voice timeline index out of range")
        rows, scores = self._parts()[index // CHUNK]
        return self._make(rows, scores, index % CHUNK, index % CHUNK + 1)[0]

    def times(self) -> npt.NDArray[np.float64]:
        """Every report's time (for binary search without making the reports)."""
        return np.concatenate([rows[:, 0] for rows, _ in self._parts()])

    def nbytes(self) -> int:
        """Bytes held by the blocks (rows not yet in a block are not counted)."""
        return sum(b.nbytes for b in self._blocks) + sum(b.nbytes for b in self._score_blocks)
