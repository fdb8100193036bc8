"""Who spoke when: speech regions from the VAD, GE2E voice prints over short windows, clustering
with an estimated speaker count, and resegmentation at turn boundaries.

One `Diarizer` serves files and live tracks alike: audio and VAD decisions are fed as they come;
windows are embedded as soon as they are complete (the cost is spread over the stream);
`current()` gives online speaker IDs that stay stable while the clustering is refined;
`segments()` clusters everything seen and returns the final turns.

The speaker count is estimated, not thresholded: spectral clustering of the windows' cosine
affinities, the count from the eigengap of the graph Laplacian (`estimate_speakers`). A fixed
cosine threshold on window pairs measured unstable (13.8-27.9% DER on the pyannote sample, see
the models' MANIFEST.md); average-linkage clustering cut at the best-silhouette count picked 1
speaker on that sample and 4-7 on acted emotional speech, the eigengap 2 (DER 5.1%).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stream.core.types import F32
from stream.voice.speaker_embed import RATE, SpeakerEmbedder, mel_spectrogram, normalise_volume
from stream.voice.vad import CHUNK, VadStep

I64 = npt.NDArray[np.int64]
STEP_S = CHUNK / RATE  # one VAD decision


@dataclass(frozen=True)
class Segment:
    """A turn: `speaker` (1-based, numbered by first appearance) spoke from `start` to `end`."""

    start: float
    end: float
    speaker: int

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class DiarizationParams:
    """Window geometry and clustering settings (the `[diarization]` config section)."""

    window_s: float = 1.5
    hop_s: float = 0.75
    min_window_s: float = 0.5
    max_speakers: int = 8
    neighbours: float = 0.3
    min_spectral_windows: int = 10
    min_silhouette: float = 0.3
    min_turn_s: float = 0.5
    max_windows: int = 600  # live: windows kept for reclustering (about 7.5 min of speech)
    max_cluster: int = 1500  # files: more windows are clustered on a subset, then assigned
    recluster_every: int = 4


@dataclass
class _Window:
    start: float
    end: float
    emb: F32
    stable: int = 0  # online speaker ID (0: not assigned yet)


# -- clustering ------------------------------------------------------------------------------
def average_linkage(emb: F32) -> list[tuple[int, int, float]]:
    """Merges of average-linkage clustering on cosine distance: (a, b, distance) per merge.

    Cluster ids: 0..n-1 are the items, n + i the cluster made by merge i (as scipy does).
    """
    n = len(emb)
    d = 1.0 - np.clip(emb @ emb.T, -1.0, 1.0).astype(np.float64)
    np.fill_diagonal(d, np.inf)
    size = np.ones(n)
    ids = list(range(n))
    active = np.ones(n, bool)
    merges = []
    for step in range(n - 1):
        flat = int(np.argmin(d))
        i, j = divmod(flat, n)
        dist = float(d[i, j])
        merges.append((ids[i], ids[j], dist))
        # Cluster j goes into i (Lance-Williams update for average linkage).
        row = (size[i] * d[i] + size[j] * d[j]) / (size[i] + size[j])
        d[i, :] = row
        d[:, i] = row
        d[i, i] = np.inf
        d[j, :] = np.inf
        d[:, j] = np.inf
        size[i] += size[j]
        active[j] = False
        ids[i] = n + step
    return merges


def cut(merges: list[tuple[int, int, float]], n: int, k: int) -> I64:
    """Labels 0..k-1 of `n` items after applying the first n - k merges."""
    parent = list(range(2 * n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for step, (a, b, _) in enumerate(merges[: n - k]):
        parent[root(a)] = n + step
        parent[root(b)] = n + step
    roots = [root(i) for i in range(n)]
    _, labels = np.unique(roots, return_inverse=True)
    return labels.astype(np.int64)


def silhouette(sim: npt.NDArray[np.float64], labels: I64) -> float:
    """Mean silhouette on cosine distance (1 - sim); clusters of one item score 0."""
    n = len(labels)
    k = int(labels.max()) + 1
    if k < 2 or k >= n:
        return -1.0
    dist = 1.0 - sim
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0
    counts = onehot.sum(axis=0)
    sums = dist @ onehot  # [n, k] distance sums to each cluster
    own = labels
    a = sums[np.arange(n), own] / np.maximum(counts[own] - 1, 1)
    other = sums / np.maximum(counts, 1)
    other[np.arange(n), own] = np.inf
    b = other.min(axis=1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-9)
    s[counts[own] <= 1] = 0.0
    return float(s.mean())


def centroids(emb: F32, labels: I64) -> F32:
    k = int(labels.max()) + 1
    c = np.stack([emb[labels == i].mean(axis=0) for i in range(k)]).astype(np.float32)
    out: F32 = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-9).astype(np.float32)
    return out


def eigengap_count(emb: F32, neighbours: float, max_speakers: int) -> tuple[int, F32]:
    """Speaker count by the eigengap of a pruned affinity graph (spectral clustering).

    Each window keeps its `neighbours` fraction of most similar windows (the graph adapts to
    how similar voices are in this recording: no fixed cosine threshold); the count is where
    the graph Laplacian's sorted eigenvalues jump most. Returns the count and the spectral
    embedding of the windows ([n, count]).
    """
    n = len(emb)
    sim = (emb @ emb.T).astype(np.float64)
    keep = max(2, round(neighbours * n))
    pruned = sim.copy()
    drop = np.argsort(-pruned, axis=1)[:, keep:]
    np.put_along_axis(pruned, drop, 0.0, axis=1)
    aff = (pruned + pruned.T) / 2
    np.fill_diagonal(aff, 0.0)
    lap = np.diag(aff.sum(axis=1)) - aff
    values, vectors = np.linalg.eigh(lap)
    gaps = np.diff(values[: min(max_speakers, n - 1) + 1])
    k = int(np.argmax(gaps)) + 1 if len(gaps) else 1
    return k, vectors[:, :k].astype(np.float32)


def kmeans(x: F32, k: int, restarts: int = 5, iters: int = 50, seed: int = 0) -> I64:
    """K-means (k-means++ seeding, best of `restarts`; deterministic for a seed)."""
    n = len(x)
    rng = np.random.default_rng(seed)
    best: tuple[float, I64] | None = None
    for _ in range(restarts):
        c = [x[rng.integers(n)]]
        for _ in range(k - 1):
            d = np.min(((x[:, None, :] - np.array(c)[None]) ** 2).sum(-1), axis=1)
            c.append(x[rng.choice(n, p=d / d.sum())] if d.sum() > 0 else x[rng.integers(n)])
        cent = np.array(c)
        labels = np.zeros(n, np.int64)
        for _ in range(iters):
            labels = np.argmin(((x[:, None, :] - cent[None]) ** 2).sum(-1), axis=1)
            new = np.array(
                [x[labels == j].mean(0) if (labels == j).any() else cent[j] for j in range(k)]
            )
            if np.allclose(new, cent):
                break
            cent = new
        inertia = float(((x - cent[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels)
    assert best is not None
    return np.unique(best[1], return_inverse=True)[1].astype(np.int64)


def estimate_speakers(emb: F32, params: DiarizationParams) -> tuple[I64, int]:
    """Cluster window embeddings with an estimated speaker count; returns labels 0..k-1 and k.

    Enough windows (`min_spectral_windows`): spectral clustering, the count from the eigengap,
    labels by k-means on the spectral embedding. Fewer (a few seconds of speech): one speaker,
    unless average-linkage agglomerative clustering finds two or more groups with a mean
    silhouette of at least `min_silhouette`.
    """
    n = len(emb)
    if n < 3:
        return np.zeros(n, np.int64), 1
    if n >= params.min_spectral_windows:
        k, vectors = eigengap_count(emb, params.neighbours, params.max_speakers)
        if k <= 1:
            return np.zeros(n, np.int64), 1
        norm = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
        labels = kmeans(norm.astype(np.float32), k)
        return labels, int(labels.max()) + 1
    merges = average_linkage(emb)
    sim = (emb @ emb.T).astype(np.float64)
    best_k, best_s = 1, -1.0
    for k in range(2, min(params.max_speakers, n - 1) + 1):
        s = silhouette(sim, cut(merges, n, k))
        if s > best_s:
            best_k, best_s = k, s
    if best_s < params.min_silhouette:
        return np.zeros(n, np.int64), 1
    return cut(merges, n, best_k), best_k


# -- resegmentation --------------------------------------------------------------------------
def resegment(
    windows: list[tuple[float, float]],
    emb: F32,
    labels: I64,
    regions: list[tuple[float, float]],
    min_turn_s: float,
    slot_s: float = 0.05,
) -> list[Segment]:
    """Turns from clustered windows: every short slot of speech goes to the speaker whose
    centroid the windows covering it resemble most; turns shorter than `min_turn_s` go to
    their longer neighbour; speakers are numbered 1.. by first appearance."""
    if not windows:
        return []
    cents = centroids(emb, labels)
    sims = emb @ cents.T  # [windows, speakers]
    starts = np.array([w[0] for w in windows])
    ends = np.array([w[1] for w in windows])
    out: list[tuple[float, float, int]] = []
    for r0, r1 in regions:
        n = max(1, round((r1 - r0) / slot_s))
        mids = r0 + (np.arange(n) + 0.5) * (r1 - r0) / n
        cover = (starts[None, :] <= mids[:, None]) & (ends[None, :] > mids[:, None])
        # Slots no window covers take the nearest window.
        centre = (starts + ends) / 2
        for s in np.nonzero(~cover.any(axis=1))[0]:
            cover[s, int(np.argmin(np.abs(centre - mids[s])))] = True
        # Windows weigh more near their centre (a turn change sits at a window's edge).
        half = np.maximum((ends - starts) / 2, 1e-3)
        w = cover * np.clip(1.0 - np.abs(mids[:, None] - centre[None, :]) / half[None, :], 0.05, 1)
        score = w @ sims / np.maximum(w.sum(axis=1, keepdims=True), 1e-9)
        slot_label = np.argmax(score, axis=1)
        runs = _runs(slot_label)
        runs = _absorb_short(runs, min_turn_s / ((r1 - r0) / n))
        for a, b, lab in runs:
            out.append((float(r0 + a * (r1 - r0) / n), float(r0 + b * (r1 - r0) / n), lab))
    order: dict[int, int] = {}
    segs = []
    for start, end, lab in sorted(out):
        order.setdefault(lab, len(order) + 1)
        segs.append(Segment(round(start, 3), round(end, 3), order[lab]))
    return segs


def _runs(labels: npt.NDArray[np.int64]) -> list[tuple[int, int, int]]:
    out = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            out.append((start, i, int(labels[start])))
            start = i
    return out


def _absorb_short(runs: list[tuple[int, int, int]], min_len: float) -> list[tuple[int, int, int]]:
    runs = list(runs)
    while len(runs) > 1:
        lengths = [b - a for a, b, _ in runs]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_len:
            break
        a, b, _ = runs[i]
        if i == 0:
            j = 1
        elif i == len(runs) - 1:
            j = i - 1
        else:
            j = i - 1 if lengths[i - 1] >= lengths[i + 1] else i + 1
        lab = runs[j][2]
        runs[i] = (a, b, lab)
        merged: list[tuple[int, int, int]] = []
        for r in runs:
            if merged and merged[-1][2] == r[2]:
                merged[-1] = (merged[-1][0], r[1], r[2])
            else:
                merged.append(r)
        runs = merged
    return runs


# -- the streaming diarizer ------------------------------------------------------------------
@dataclass
class Diarizer:
    """Diarizes one audio stream (a file's track or a live mixed track). Not thread-safe.

    Feed 16 kHz audio and the VAD decisions over it (`add`); both start at stream time 0.
    """

    embedder: SpeakerEmbedder
    params: DiarizationParams = field(default_factory=DiarizationParams)
    online: bool = False  # live: keep only the latest `max_windows` windows

    def __post_init__(self) -> None:
        self.windows: list[_Window] = []
        self.regions: list[tuple[float, float]] = []
        self.dropped = 0  # windows forgotten beyond `max_windows` (long live streams)
        self._audio = np.zeros(0, np.float32)
        self._audio_t0 = 0.0  # stream time of self._audio[0]
        self._region_start: float | None = None
        self._next_window = 0.0  # start of the next window in the open region
        self._quiet_since: float | None = None
        self._since_cluster = 0
        self._labels: I64 = np.zeros(0, np.int64)
        self._next_id = 1

    # -- input -----------------------------------------------------------------------------
    def add(self, audio16k: F32, steps: list[VadStep]) -> list[_Window]:
        """Feed audio and VAD steps (in order); returns the windows completed by it."""
        self._audio = np.concatenate([self._audio, np.asarray(audio16k, np.float32)])
        new: list[_Window] = []
        p = self.params
        for s in steps:
            if s.speech:
                self._quiet_since = None
                if self._region_start is None:
                    self._region_start = s.t
                    self._next_window = s.t
            elif self._region_start is not None:
                if self._quiet_since is None:
                    self._quiet_since = s.t
                if s.t + STEP_S - self._quiet_since >= 0.3:
                    new += self._close_region(self._quiet_since)
            if self._region_start is not None:
                end = s.t + STEP_S if self._quiet_since is None else self._quiet_since
                while self._next_window + p.window_s <= end:
                    new += self._embed([(self._next_window, self._next_window + p.window_s)])
                    self._next_window += p.hop_s
        self._trim()
        return new

    def flush(self) -> list[_Window]:
        """End of input: close the open speech region."""
        if self._region_start is None:
            return []
        end = self._quiet_since
        if end is None:
            end = self._audio_t0 + len(self._audio) / RATE
        return self._close_region(end)

    def _close_region(self, end: float) -> list[_Window]:
        start = self._region_start
        assert start is not None
        self._region_start = None
        self._quiet_since = None
        self.regions.append((start, end))
        p = self.params
        covered = self._next_window - p.hop_s + p.window_s if self._next_window > start else start
        if end - covered >= p.min_window_s * 0.5 and end - start >= p.min_window_s:
            # The tail no full window covered: one window ending at the region's end.
            return self._embed([(max(start, end - p.window_s), end)])
        return []

    def _embed(self, spans: list[tuple[float, float]]) -> list[_Window]:
        mels = []
        for s, e in spans:
            a = round((s - self._audio_t0) * RATE)
            b = round((e - self._audio_t0) * RATE)
            seg = self._audio[max(a, 0) : max(b, 0)]
            m = mel_spectrogram(normalise_volume(seg))
            mels.append(m[: max(1, round((e - s) * 100))])
        emb = self.embedder.embed_mels(mels)
        out = [_Window(s, e, emb[i]) for i, (s, e) in enumerate(spans)]
        self.windows += out
        self._since_cluster += len(out)
        if self.online and len(self.windows) > self.params.max_windows:
            extra = len(self.windows) - self.params.max_windows
            self.windows = self.windows[extra:]
            self._labels = self._labels[extra:] if len(self._labels) > extra else self._labels[:0]
            self.dropped += extra
        return out

    def _trim(self) -> None:
        """Keep only the audio a later window may still need."""
        now = self._audio_t0 + len(self._audio) / RATE
        keep_from = now - self.params.window_s - 1.0
        if self._region_start is not None:
            keep_from = min(keep_from, self._next_window)
        drop = int((keep_from - self._audio_t0) * RATE)
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_t0 += drop / RATE

    # -- output ----------------------------------------------------------------------------
    def current(self) -> int:
        """The online speaker ID (1..) of the latest window, 0 before the first window.

        The windows are reclustered every `recluster_every` new windows; new clusters inherit
        the ID most of their windows had, so IDs stay stable as the estimate improves.
        """
        if not self.windows:
            return 0
        if self._since_cluster >= self.params.recluster_every or len(self._labels) == 0:
            self._recluster()
        w = self.windows[-1]
        if w.stable == 0:  # between reclusterings: the nearest known speaker
            known = [x for x in self.windows if x.stable]
            if not known:
                w.stable = self._new_id()
            else:
                ids = sorted({x.stable for x in known})
                cents = np.stack([np.mean([x.emb for x in known if x.stable == i], 0) for i in ids])
                w.stable = ids[int(np.argmax(cents @ w.emb))]
        return w.stable

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _recluster(self) -> None:
        self._since_cluster = 0
        emb = np.stack([w.emb for w in self.windows])
        labels, _ = estimate_speakers(emb, self.params)
        taken: set[int] = set()
        for lab in np.argsort(-np.bincount(labels)):  # biggest clusters choose first
            members = [w for w, x in zip(self.windows, labels, strict=True) if x == lab]
            votes: dict[int, int] = {}
            for w in members:
                if w.stable and w.stable not in taken:
                    votes[w.stable] = votes.get(w.stable, 0) + 1
            sid = max(votes, key=lambda k: votes[k]) if votes else self._new_id()
            taken.add(sid)
            for w in members:
                w.stable = sid
        self._labels = labels

    def segments(self) -> list[Segment]:
        """Cluster every window seen and return the turns (speakers numbered 1.. in order)."""
        if not self.windows:
            return []
        emb = np.stack([w.emb for w in self.windows])
        labels = self._cluster_all(emb)
        first = self.windows[0].start
        regions = [r for r in self.regions if r[1] > first]
        if self._region_start is not None:
            regions.append((self._region_start, self.windows[-1].end))
        spans = [(w.start, w.end) for w in self.windows]
        return resegment(spans, emb, labels, regions, self.params.min_turn_s)

    def _cluster_all(self, emb: F32) -> I64:
        """Labels of all windows; beyond `max_cluster` windows, a regular subset is clustered
        and the rest go to the nearest centroid (keeps long recordings tractable)."""
        n = len(emb)
        if n <= self.params.max_cluster:
            return estimate_speakers(emb, self.params)[0]
        idx = np.linspace(0, n - 1, self.params.max_cluster).round().astype(np.int64)
        sub, _ = estimate_speakers(emb[idx], self.params)
        out: I64 = np.argmax(emb @ centroids(emb[idx], sub).T, axis=1).astype(np.int64)
        return out


# -- evaluation ------------------------------------------------------------------------------
def read_rttm(text: str) -> list[tuple[float, float, str]]:
    """(start, end, speaker) turns of an RTTM file's SPEAKER lines."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            out.append((start, start + dur, f[7]))
    return out


def diarization_error(
    reference: list[tuple[float, float, str]],
    hypothesis: list[tuple[float, float, str]],
    collar: float = 0.25,
    step: float = 0.01,
    skip_overlap: bool = False,
) -> dict[str, float]:
    """Diarization error rate (NIST style): missed speech, false alarm and speaker confusion
    over the reference speech time, with the best one-to-one speaker mapping and `collar`
    seconds around every reference boundary not scored. Overlapped speech is scored unless
    `skip_overlap`. `right` is the share of speech found (reference and hypothesis both
    speaking) that went to the mapped speaker."""
    end = max([e for _, e, _ in reference + hypothesis], default=0.0)
    n = int(np.ceil(end / step)) + 1
    t = (np.arange(n) + 0.5) * step
    scored = np.ones(n, bool)
    for s, e, _ in reference:
        for b in (s, e):
            scored &= np.abs(t - b) > collar

    def matrix(turns: list[tuple[float, float, str]]) -> tuple[list[str], npt.NDArray[np.bool_]]:
        names = sorted({x for _, _, x in turns})
        m = np.zeros((len(names), n), bool)
        for s, e, x in turns:
            m[names.index(x), (t >= s) & (t < e)] = True
        return names, m[:, scored]

    if skip_overlap:
        count = np.zeros(n, np.int64)
        for s, e, _ in reference:
            count += (t >= s) & (t < e)
        scored &= count <= 1
    _, ref = matrix(reference)
    _, hyp = matrix(hypothesis)
    nref, nhyp = ref.sum(axis=0), hyp.sum(axis=0)
    total = float(nref.sum())
    overlap = ref.astype(np.float64) @ hyp.T.astype(np.float64)  # [ref, hyp] frames together
    matched = _best_matching(overlap)
    miss = float(np.maximum(nref - nhyp, 0).sum())
    fa = float(np.maximum(nhyp - nref, 0).sum())
    conf = float(np.minimum(nref, nhyp).sum()) - matched
    return {
        "der": (miss + fa + conf) / max(total, 1.0),
        "miss": miss / max(total, 1.0),
        "false_alarm": fa / max(total, 1.0),
        "confusion": conf / max(total, 1.0),
        "right": matched / max(float(np.minimum(nref, nhyp).sum()), 1.0),
        "speech_s": total * step,
    }


def _best_matching(overlap: npt.NDArray[np.float64]) -> float:
    """The largest total overlap of a one-to-one speaker mapping (exact for small counts)."""
    import itertools

    r, h = overlap.shape
    if r == 0 or h == 0:
        return 0.0
    if r > h:
        overlap, r, h = overlap.T, h, r
    if h <= 8:
        return max(
            float(sum(overlap[i, p[i]] for i in range(r)))
            for p in itertools.permutations(range(h), r)
        )
    total, o = 0.0, overlap.copy()  # greedy beyond 8 speakers
    for _ in range(r):
        i, j = divmod(int(np.argmax(o)), h)
        total += float(o[i, j])
        o[i, :] = -1
        o[:, j] = -1
    return total
