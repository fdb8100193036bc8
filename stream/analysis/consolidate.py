"""Whole-file identity consolidation: join tracklets into people after the pass.

A file is seen whole, so identities can be decided the way an editor who watched the whole
video would label it, better than any online tracker can. The online tracker cuts each
identity's presence into tracklets (runs held together by geometric continuity, each with its
own embedding gallery; `stream.vision.tracker.Tracklet`). Here they are clustered bottom-up:

* the online tracker's own joins are kept: tracklets shown under one number start as one group
  (it joined them only past its return threshold and margin);
* the similarity of two groups is the mean cosine over every pair of their embeddings (average
  linkage: one lucky view of a look-alike does not join two people);
* groups with tracklets that overlap in time are different people and are never joined;
* the most similar pair is joined first, only at `join_threshold` or above, and only with
  `join_margin` over the best alternative that excludes it (a group that overlaps one side in
  time but not the other: either could be the same person, not both);
* a group without any embedding stays as it is.

Then short groups are *folded*: a group on screen for less than `fold_s` in all (a blink, a
turn, a hand over the face, a blurred frame the online tracker could not match) in a gap of
another group's track (that group ends at most `fold_gap_s` before it and resumes at most
`fold_gap_s` after it) is that group's person when appearance allows: it resembles that group
at least as much as any other group that could be there. A sub-second face that stays apart
says why in its entry's "note".

People are then numbered by first appearance ("Face 1" appears first). The result says which
tracklets were joined and with what similarity (the JSON's "identity" object).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.analysis.aggregate import Aggregator
from stream.core.types import F32


@dataclass(frozen=True)
class TrackletView:
    """What consolidation needs of one tracklet."""

    key: int  # unique in the stream
    number: int  # the online public number (Face N) it was shown under
    first_t: float
    last_t: float
    embeddings: F32  # [G, D] unit vectors (may be empty)
    track: str = "video"

    def overlaps(self, other: TrackletView) -> bool:
        return self.first_t <= other.last_t and other.first_t <= self.last_t


@dataclass(frozen=True)
class Join:
    """Two groups of tracklets found to be one person."""

    tracklets: tuple[int, ...]
    joined: tuple[int, ...]
    similarity: float
    reason: str = "appearance"  # or "interrupted": a short group folded into the track it broke


@dataclass
class Consolidation:
    """People found in a stream: tracklets per new number, and the joins that made them."""

    people: dict[int, list[TrackletView]]
    joins: list[Join] = field(default_factory=list)
    join_threshold: float = 0.0
    join_margin: float = 0.0
    notes: dict[int, str] = field(default_factory=dict)  # tracklet key -> why a short face stays

    def __post_init__(self) -> None:
        self._person_of = {tr.key: n for n, trs in self.people.items() for tr in trs}
        self._by_number: dict[int, list[TrackletView]] = {}
        for trs in self.people.values():
            for tr in trs:
                self._by_number.setdefault(tr.number, []).append(tr)
        for trs in self._by_number.values():
            trs.sort(key=lambda tr: tr.first_t)

    def number_at(self, number: int, t: float) -> int:
        """The consolidated number of what the online tracker showed as `number` at time t."""
        trs = self._by_number.get(number)
        if not trs:
            return number
        best = trs[0]
        for tr in trs:
            if tr.first_t <= t + 1e-6:
                best = tr
        return self._person_of[best.key]

    def renumbered(self) -> dict[int, int]:
        """Online number -> consolidated number, for numbers whose tracklets all went to one
        person (names, exclusions, thumbnails carry over for those)."""
        out = {}
        for number, trs in self._by_number.items():
            people = {self._person_of[tr.key] for tr in trs}
            if len(people) == 1:
                out[number] = people.pop()
        return out

    def note(self, number: int) -> str:
        """Why a sub-second face stays a face of its own ("" when it is not one)."""
        trs = self.people.get(number, [])
        return self.notes.get(trs[0].key, "") if trs else ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON "identity" object."""
        return {
            "consolidated": True,
            "policy": {"join_threshold": self.join_threshold, "join_margin": self.join_margin},
            "tracklets": sum(len(v) for v in self.people.values()),
            "people": len(self.people),
            "faces": [
                {
                    "id": number,
                    "online_ids": sorted({tr.number for tr in trs}),
                    **(
                        {"note": self.notes[trs[0].key]} if trs and trs[0].key in self.notes else {}
                    ),
                    "tracklets": [
                        {
                            "id": tr.key,
                            "online_id": tr.number,
                            "from_s": round(tr.first_t, 3),
                            "to_s": round(tr.last_t, 3),
                        }
                        for tr in sorted(trs, key=lambda tr: tr.first_t)
                    ],
                }
                for number, trs in sorted(self.people.items())
            ],
            "joins": [
                {
                    "id": self._person_of[j.tracklets[0]],
                    "tracklets": list(j.tracklets),
                    "joined": list(j.joined),
                    "similarity": round(j.similarity, 4),
                    "reason": j.reason,
                }
                for j in self.joins
            ],
        }


def consolidate(
    tracklets: Sequence[TrackletView],
    join_threshold: float,
    join_margin: float,
    fold_s: float = 1.0,
    fold_gap_s: float = 1.0,
) -> Consolidation:
    """Join tracklets into people (see the module docstring).

    Args:
        tracklets: every confirmed tracklet of the stream (number > 0).
        join_threshold: mean cosine two groups need to be joined.
        join_margin: lead the pair needs over the best alternative that excludes it.
        fold_s: a group seen for less than this may be folded into the track it interrupts.
        fold_gap_s: the longest gap between that track and the short group, on either side.
    """
    trs = [tr for tr in tracklets if tr.number > 0]
    by_number: dict[int, list[TrackletView]] = {}
    for tr in trs:  # the online tracker's own joins (returns past its margin) are kept
        by_number.setdefault(tr.number, []).append(tr)
    groups = [by_number[k] for k in sorted(by_number)]
    dim = next((tr.embeddings.shape[1] for tr in trs if len(tr.embeddings)), 1)
    sums = [
        sum((tr.embeddings.sum(axis=0) for tr in g if len(tr.embeddings)), np.zeros(dim))
        for g in groups
    ]
    counts = [sum(len(tr.embeddings) for tr in g) for g in groups]
    joins: list[Join] = []
    n = len(groups)
    alive = [True] * n
    conflict = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(n):
            conflict[i, j] = i != j and any(a.overlaps(b) for a in groups[i] for b in groups[j])
    while True:
        idx = [i for i in range(n) if alive[i] and counts[i] > 0]
        if len(idx) < 2:
            break
        s = np.stack([np.asarray(sums[i], np.float64) for i in idx])
        c = np.asarray([counts[i] for i in idx], dtype=np.float64)
        sim = (s @ s.T) / np.outer(c, c)
        sub = conflict[np.ix_(idx, idx)]
        sim[sub] = -np.inf
        np.fill_diagonal(sim, -np.inf)
        joined = False
        for flat in np.argsort(-sim, axis=None):
            a, b = divmod(int(flat), len(idx))
            if a > b:
                continue
            best = float(sim[a, b])
            if best < join_threshold:
                break
            # Alternatives that exclude this pair: compatible with one side, not the other.
            alt_a = sim[a][sub[b] & ~sub[a]]
            alt_b = sim[b][sub[a] & ~sub[b]]
            alt = max(float(alt_a.max(initial=-1.0)), float(alt_b.max(initial=-1.0)))
            if best - alt < join_margin:
                continue
            ga, gb = idx[a], idx[b]
            first, second = sorted((ga, gb), key=lambda g: min(tr.first_t for tr in groups[g]))
            keys_a = tuple(tr.key for tr in groups[first])
            joins.append(Join(keys_a, tuple(tr.key for tr in groups[second]), best))
            groups[first] = groups[first] + groups[second]
            sums[first] = sums[first] + sums[second]
            counts[first] += counts[second]
            alive[second] = False
            conflict[first] |= conflict[second]
            conflict[:, first] |= conflict[:, second]
            conflict[first, first] = False
            joined = True
            break
        if not joined:
            break
    notes = _fold_short(groups, alive, sums, counts, conflict, joins, fold_s, fold_gap_s)
    people_groups = [groups[i] for i in range(n) if alive[i]]
    people_groups.sort(key=lambda g: min(tr.first_t for tr in g))
    people = {k + 1: sorted(g, key=lambda tr: tr.first_t) for k, g in enumerate(people_groups)}
    return Consolidation(people, joins, join_threshold, join_margin, notes)


def _fold_short(
    groups: list[list[TrackletView]],
    alive: list[bool],
    sums: list[Any],
    counts: list[int],
    conflict: Any,
    joins: list[Join],
    fold_s: float,
    gap_s: float,
) -> dict[int, str]:
    """Fold sub-`fold_s` groups into the track they interrupt (module docstring); returns a
    note per short group left apart (keyed by its first tracklet)."""
    notes: dict[int, str] = {}

    def span(g: int) -> tuple[float, float]:
        return min(tr.first_t for tr in groups[g]), max(tr.last_t for tr in groups[g])

    def sim(a: int, b: int) -> float | None:
        if not counts[a] or not counts[b]:
            return None
        va, vb = np.asarray(sums[a], np.float64), np.asarray(sums[b], np.float64)
        return float(va @ vb) / (counts[a] * counts[b])

    def seen(g: int) -> float:  # time on screen: a face seen twice briefly is brief too
        return sum(tr.last_t - tr.first_t for tr in groups[g])

    short = sorted((g for g in range(len(groups)) if alive[g] and seen(g) < fold_s), key=seen)
    for g in short:
        t0, t1 = span(g)
        key = min(groups[g], key=lambda tr: tr.first_t).key
        interrupted = [
            o
            for o in range(len(groups))
            if o != g
            and alive[o]
            and not conflict[g, o]
            and any(0 <= t0 - tr.last_t <= gap_s for tr in groups[o])
            and any(0 <= tr.first_t - t1 <= gap_s for tr in groups[o])
        ]
        if not interrupted:
            notes[key] = "brief, kept apart: no other face was missing just before and after it"
            continue
        compatible = [o for o in range(len(groups)) if o != g and alive[o] and not conflict[g, o]]
        sims = {o: sim(g, o) for o in compatible}
        if sims.get(interrupted[0]) is None:
            target: int | None = interrupted[0] if len(interrupted) == 1 else None
            similarity = float("nan")
        else:
            best_other = max((v for v in sims.values() if v is not None), default=-1.0)
            ranked = sorted(interrupted, key=lambda o: -(sims[o] or -1.0))
            top = sims[ranked[0]]
            target = ranked[0] if top is not None and top >= best_other else None
            similarity = top if top is not None else float("nan")
        if target is None:
            notes[key] = "brief, kept apart: it broke another face's track but looks unlike it"
            continue
        first, second = sorted((target, g), key=lambda k: span(k)[0])
        joins.append(
            Join(
                tuple(tr.key for tr in groups[first]),
                tuple(tr.key for tr in groups[second]),
                similarity,
                "interrupted",
            )
        )
        groups[target] = groups[target] + groups[g]
        sums[target] = sums[target] + sums[g]
        counts[target] += counts[g]
        alive[g] = False
        conflict[target] |= conflict[g]
        conflict[:, target] |= conflict[:, g]
        conflict[target, target] = False
    return notes


def renumber_aggregator(agg: Aggregator, result: Consolidation) -> Aggregator:
    """A new aggregator holding `agg`'s timelines under the consolidated numbers.

    Every timeline point keeps its time, interval and sample; only the number changes. Needs
    an aggregator that keeps timelines (files do).
    """
    out = Aggregator(agg.nominal_dt, agg.max_gap_s, agg.supported, agg.keep_timeline)
    numbers = sorted({f.number for f in agg.faces()})
    points: dict[int, list[tuple[float, float, Any]]] = {}
    for number in numbers:
        for p in agg.timeline(number):
            new = result.number_at(number, p.t)
            sample = dataclasses.replace(p.sample, number=new)
            points.setdefault(new, []).append((p.t, p.dt, sample))
    for new, pts in points.items():
        stream = f"face {new}"
        for t, dt, sample in sorted(pts, key=lambda x: x[0]):
            # One stream per face: the empty frame at t + dt closes the point after exactly dt.
            out.add_frame(t, [sample], stream)
            out.add_frame(t + dt, [], stream)
    out.finish()
    for old, new in result.renumbered().items():
        if old in agg.names:
            out.names[new] = agg.names[old]
    return out
