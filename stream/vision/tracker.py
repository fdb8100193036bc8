"""Identity tracking: geometric association every frame, embedding re-identification when unsure.

Each identity keeps a gallery of quality-gated face embeddings. A face matched by geometry alone
(high IoU, no competitor, unchanged appearance, recently verified) skips the embedding model;
every other face is embedded and matched against all identities seen in the session, so a person
who leaves and returns, or two people who swap places, keep their own IDs. Public numbers
("Face N") are given in order of confirmation and never reused.

Policy (README "Identity tracking"): geometry keeps an ID only while appearance agrees. A face at
an identity's place whose content changed abruptly (thumbnail correlation below
`appearance_certain`) keeps the ID only with embedding similarity `keep_after_change`; a weak
match (overlap plus a similarity below `reid_threshold`) is accepted only without such a change.
A face away from an identity's place (a return, a reordered tile) takes it only with similarity
above a threshold that rises with the gallery's size and for poor views, and with
`reid_margin` over the second-best identity. When unsure, the face gets a new tentative
identity. Identities in the same frame are never the same person.

A new identity needs evidence that it is a new person. One that appears at the place of a
confirmed identity that is missing from the frame (it *interrupts* that identity: a blink, a
head turn, a hand over the face, a frame of motion blur, or a new participant in the tile)
stays tentative for `tentative_max_s`, until it has a good view whose embedding does not match
the interrupted identity: if the person comes back meanwhile, they keep their ID and the
tentative one is dropped, so a disturbed face never shows a second number.

Every identity's presence is cut into *tracklets*: runs held together by geometric continuity.
Each keeps its own gallery, so a whole file can be consolidated afterwards
(`stream.analysis.consolidate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from stream.core.config import TrackingConfig
from stream.core.types import F32, U8, FaceDetections, VideoFrame
from stream.vision.align import align_faces, crop_squares
from stream.vision.quality import Quality, QualityGate

#: Geometry distance: boxes [N, 4] vs boxes [M, 4] -> [N, M] similarity in [0, 1].
GeometryFn = Callable[[F32, F32], F32]
#: Appearance similarity: embedding [D] vs gallery [G, D] -> similarity in [-1, 1].
AppearanceFn = Callable[[F32, F32], float]
#: Embeds aligned 112x112 BGR crops [N, 112, 112, 3] -> [N, D] unit vectors.
EmbedFn = Callable[[U8], F32]
#: Quality of one aligned crop given its landmarks and box size.
QualityFn = Callable[[U8, F32, float], Quality]

_SIG = 24  # side of the cheap appearance signature


def iou_matrix(a: F32, b: F32) -> F32:
    """Pairwise IoU of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.asarray(inter / np.maximum(union, 1e-9), dtype=np.float32)


def max_cosine(embedding: F32, gallery: F32) -> float:
    """Best cosine similarity between a unit vector and a gallery of unit vectors."""
    if len(gallery) == 0:
        return -1.0
    return float(np.max(gallery @ embedding))


def signatures(image: U8, boxes: F32) -> F32:
    """Tiny zero-mean, unit-norm grey thumbnails: a cheap "is it still the same face?" check."""
    if len(boxes) == 0:
        return np.zeros((0, _SIG * _SIG), dtype=np.float32)
    crops = crop_squares(image, boxes, _SIG).astype(np.float32).mean(axis=3)
    v = crops.reshape(len(boxes), -1)
    v -= v.mean(axis=1, keepdims=True)
    return np.asarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6), np.float32)


#: Box offsets (shares of its side) and scales over which `aligned_similarity` looks.
_SHIFTS = (-0.03, 0.0, 0.03)
_SCALES = (0.95, 1.0, 1.05)


def aligned_similarity(image: U8, box: F32, signature: F32) -> float:
    """The best correlation of `signature` with the thumbnails of `box` moved by up to 3% of its
    side and scaled by 5%: a detector's box differs from the flow-moved one by that much,
    which alone drops the plain correlation of an expressive face below `appearance_certain`
    (fer_woman2: 41 of 154 detections failed it, 40 of them pass aligned)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    boxes = [
        (
            cx + dx * w - k * w / 2,
            cy + dy * h - k * h / 2,
            cx + dx * w + k * w / 2,
            cy + dy * h + k * h / 2,
        )
        for dx in _SHIFTS
        for dy in _SHIFTS
        for k in _SCALES
    ]
    return float(np.max(signatures(image, np.asarray(boxes, np.float32)) @ signature))


class Numbering:
    """Public face numbers in order of confirmation: 1, 2, 3, ... never reused until reset."""

    def __init__(self) -> None:
        self._next = 1

    def take(self) -> int:
        n = self._next
        self._next += 1
        return n

    def reset(self) -> None:
        self._next = 1


@dataclass
class Tracklet:
    """A run of one identity held together by geometric continuity, with its own gallery."""

    key: int
    identity: int  # Identity.key
    first_t: float
    last_t: float
    number: int = 0  # the public number it was shown under (0: never confirmed)
    gallery: list[F32] = field(default_factory=list)  # good views, diverse
    other: list[F32] = field(default_factory=list)  # a few other views (when no good one)
    views: int = 0

    def embeddings(self) -> F32:
        """The gallery, or the other views when there was no good one: [G, D]."""
        items = self.gallery or self.other
        if not items:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(items).astype(np.float32)

    def add(self, emb: F32, good: bool, size: int, diversity: float) -> None:
        self.views += 1
        target = self.gallery if good else self.other
        cap = size if good else 4
        if target:
            sims = np.stack(target) @ emb
            if float(sims.max()) >= diversity:
                return
            if len(target) >= cap:
                target[int(np.argmax(sims))] = emb
                return
        target.append(emb)


@dataclass
class Identity:
    """One person seen in the session."""

    key: int
    first_t: float
    last_t: float
    box: F32
    signature: F32
    number: int = 0  # public "Face N"; 0 while tentative
    hits: int = 1
    gallery: list[F32] = field(default_factory=list)
    last_embedding: F32 | None = None
    last_embed_t: float = -np.inf
    good_views: int = 0
    tracklet: Tracklet | None = None
    interrupts: int = 0  # key of the confirmed identity whose place it took (0: none)
    distinct: bool = False  # a good view that does not match the interrupted identity

    @property
    def confirmed(self) -> bool:
        return self.number > 0

    def gallery_array(self) -> F32:
        items = list(self.gallery)
        if self.last_embedding is not None:
            items.append(self.last_embedding)
        if not items:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(items).astype(np.float32)


@dataclass(frozen=True)
class TrackerStats:
    """Counters for the last update (for latency budgets and metrics)."""

    faces: int = 0
    embedded: int = 0
    by_geometry: int = 0


class IdentityTracker:
    """Assigns stable public IDs to the faces of consecutive frames.

    Args:
        config: thresholds (see `TrackingConfig`).
        embed: embeds aligned crops; called only for faces whose identity is uncertain.
        quality: gallery gate; defaults to `QualityGate(config)`.
        geometry: box similarity; defaults to IoU.
        appearance: embedding-vs-gallery similarity; defaults to max cosine.
        coast_s: how long an unseen identity still takes part in geometric matching.
        numbering: hands out public numbers; share one between trackers (e.g. the video
            tracks of one call) to keep numbers unique across them. Default: 1, 2, 3, ...
    """

    def __init__(
        self,
        config: TrackingConfig,
        embed: EmbedFn,
        quality: QualityFn | None = None,
        geometry: GeometryFn = iou_matrix,
        appearance: AppearanceFn = max_cosine,
        coast_s: float = 1.0,
        numbering: Numbering | None = None,
    ) -> None:
        self.config = config
        self.embed = embed
        self.quality = quality or QualityGate(config)
        self.geometry = geometry
        self.appearance = appearance
        self.coast_s = coast_s
        self.identities: dict[int, Identity] = {}
        self._next_key = 1
        self.numbering = numbering or Numbering()
        self.last_stats = TrackerStats()
        self.tracklets: list[Tracklet] = []

    def reset(self) -> None:
        """Forget every identity; numbering restarts at Face 1."""
        self.identities.clear()
        self.tracklets.clear()
        self._next_key = 1
        self.numbering.reset()

    def return_threshold(self, ident: Identity, good_view: bool) -> float:
        """Similarity a face away from the identity's place needs: `reid_threshold`, raised by
        `reid_per_doubling` per doubling of the gallery (more views, more chance that one of
        them resembles a stranger) and by `reid_poor_view` for a small, blurred or turned face."""
        c = self.config
        g = max(len(ident.gallery) + (ident.last_embedding is not None), 1)
        return (
            c.reid_threshold
            + c.reid_per_doubling * math.log2(g)
            + (0.0 if good_view else c.reid_poor_view)
        )

    @property
    def confirmed(self) -> list[Identity]:
        return [i for i in self.identities.values() if i.confirmed]

    def update(self, frame: VideoFrame, faces: FaceDetections) -> FaceDetections:
        """Assign identities to this frame's faces.

        Returns:
            The faces with `track_ids` set to the public number, or -1 while tentative.
        """
        c = self.config
        t = frame.t
        n = len(faces)
        sigs = signatures(frame.image, faces.boxes)
        recent = [i for i in self.identities.values() if t - i.last_t <= self.coast_s]
        geo = (
            self.geometry(faces.boxes, np.stack([i.box for i in recent]))
            if recent
            else (np.zeros((n, 0), np.float32))
        )
        assigned: dict[int, Identity] = {}
        taken: set[int] = set()

        # 1. Geometry alone where it is unambiguous and the face still looks the same.
        for d in range(n):
            if not recent:
                break
            j = int(np.argmax(geo[d]))
            ident = recent[j]
            if not ident.confirmed or geo[d, j] < c.iou_certain:
                continue
            if (geo[d] > c.iou_match).sum() != 1 or (geo[:, j] > c.iou_match).sum() != 1:
                continue
            if float(sigs[d] @ ident.signature) < c.appearance_certain and (
                aligned_similarity(frame.image, faces.boxes[d], ident.signature)
                < c.appearance_certain
            ):
                continue
            if t - ident.last_embed_t > c.reverify_s:
                continue
            assigned[d] = ident
            taken.add(ident.key)
        by_geometry = len(assigned)

        # 2. Embeddings for the rest, matched against every identity of the session.
        rest = [d for d in range(n) if d not in assigned]
        embeddings: dict[int, F32] = {}
        qualities: dict[int, Quality] = {}
        if rest:
            sub = faces.select(np.asarray(rest, dtype=np.intp))
            aligned = align_faces(frame.image, sub)
            embs = self.embed(aligned)
            for k, d in enumerate(rest):
                embeddings[d] = embs[k]
                qualities[d] = self.quality(aligned[k], sub.landmarks[k], float(sub.sizes[k]))
        confident: set[int] = set()
        continuous = set(assigned)  # faces that keep their identity at its place

        def interrupter_app(d: int, ident: Identity) -> float | None:
            """Face d's similarity to a tentative identity at its place that interrupted
            `ident` (None when there is none)."""
            best: float | None = None
            for j, other in enumerate(recent):
                if other.confirmed or other.interrupts != ident.key or other.key in taken:
                    continue
                if geo[d, j] < c.iou_match:
                    continue
                app = self.appearance(embeddings[d], other.gallery_array())
                best = app if best is None else max(best, app)
            return best

        recent_index = {ident.key: j for j, ident in enumerate(recent)}
        for want_confirmed in (True, False):
            pool = [
                i
                for i in self.identities.values()
                if i.confirmed == want_confirmed and i.key not in taken
            ]
            galleries = {ident.key: ident.gallery_array() for ident in pool}
            # Confirmed identities also compete with tentative ones: a return must not take a
            # face that a newcomer's own views resemble more.
            others = [
                i.gallery_array()
                for i in self.identities.values()
                if want_confirmed and not i.confirmed and i.key not in taken
            ]
            cands: list[tuple[float, int, Identity, bool, bool]] = []
            for d in rest:
                if d in assigned:
                    continue
                apps = [self.appearance(embeddings[d], galleries[i.key]) for i in pool]
                rivals = [self.appearance(embeddings[d], g) for g in others if len(g)]
                top2 = sorted(apps + rivals, reverse=True)[:2]
                for ident, app in zip(pool, apps, strict=True):
                    col = recent_index.get(ident.key)
                    g = float(geo[d, col]) if col is not None else 0.0
                    if g >= c.iou_match:  # at the identity's place
                        changed = float(sigs[d] @ ident.signature) < c.appearance_certain
                        need = c.keep_after_change if changed else c.reid_threshold
                        score = app + c.geometry_weight * g
                        rival = interrupter_app(d, ident)
                        if rival is not None:
                            # A tentative face took this identity's place: it comes back only
                            # on a clear match that resembles it more than the newcomer.
                            if app >= need and app >= rival:
                                cands.append((score, d, ident, True, True))
                            continue
                        if app >= need:
                            cands.append((score, d, ident, True, True))
                        elif not changed and app >= c.reid_threshold / 2:
                            cands.append((score, d, ident, False, True))
                        continue
                    # Elsewhere: a return or a reordered tile needs a clear, unique match.
                    if app < top2[0]:
                        continue  # another identity resembles this face more
                    second = top2[1] if len(top2) > 1 else -1.0
                    if (
                        app >= self.return_threshold(ident, qualities[d].ok)
                        and app - second >= c.reid_margin
                    ):
                        cands.append((app, d, ident, True, False))
            for _score, d, ident, strong, here in sorted(cands, key=lambda x: -x[0]):
                if d in assigned or ident.key in taken:
                    continue
                assigned[d] = ident
                taken.add(ident.key)
                if strong:
                    confident.add(d)
                if here:
                    continuous.add(d)

        # 3. New (tentative) identities for faces nobody matched; one at the place of a
        # confirmed identity missing from this frame interrupts it (see the module docstring).
        for d in rest:
            if d not in assigned:
                ident = Identity(self._next_key, t, t, faces.boxes[d].copy(), sigs[d])
                ident.hits = 0
                self._next_key += 1
                places = [
                    (float(geo[d, j]), other.key)
                    for j, other in enumerate(recent)
                    if other.confirmed and other.key not in taken and geo[d, j] >= c.iou_match
                ]
                if places:
                    ident.interrupts = max(places)[1]
                self.identities[ident.key] = ident
                assigned[d] = ident
                confident.add(d)

        # A tentative face whose good view clearly matches the identity it interrupted is that
        # identity (it never stays tentative for want of evidence that it is someone else).
        for d, ident in list(assigned.items()):
            other = self.identities.get(ident.interrupts) if not ident.confirmed else None
            if other is None or other.key in taken or d not in embeddings or not qualities[d].ok:
                continue
            gallery = other.gallery_array()
            if len(gallery) and self.appearance(embeddings[d], gallery) >= c.keep_after_change:
                assigned[d] = other
                taken.add(other.key)
                confident.add(d)
                del self.identities[ident.key]

        # 4. Update identities.
        ids = np.full(n, -1, dtype=np.int64)
        for d, ident in assigned.items():
            ident.box = faces.boxes[d].copy()
            ident.signature = sigs[d]
            ident.last_t = t
            ident.hits += 1
            tr = ident.tracklet
            if tr is None or d not in continuous or t - tr.last_t > self.coast_s:
                tr = ident.tracklet = Tracklet(len(self.tracklets) + 1, ident.key, t, t)
                self.tracklets.append(tr)
            tr.last_t = t
            if d in embeddings:
                ident.last_embedding = embeddings[d]
                ident.last_embed_t = t
                good = d in confident and qualities[d].ok
                if good:
                    self._add_to_gallery(ident, embeddings[d])
                    if not ident.confirmed and ident.interrupts:
                        ident.distinct = ident.distinct or self._distinct(ident, embeddings[d])
                tr.add(embeddings[d], good, c.gallery_size, c.gallery_diversity)
            if not ident.confirmed and self._ready(ident, t):
                ident.number = self.numbering.take()
            tr.number = ident.number
            ids[d] = ident.number if ident.confirmed else -1
        self._drop_stale_tentatives(t)
        self.last_stats = TrackerStats(n, len(embeddings), by_geometry)
        return faces.with_track_ids(ids)

    def follow(self, frame: VideoFrame, faces: FaceDetections) -> None:
        """Move identities along with faces tracked without detection (optical flow).

        Keeps the next detection's cheap geometric match valid when detections are sparse:
        without it, boxes and thumbnails go stale and every face needs an embedding again.
        A face whose thumbnail no longer correlates with its identity's (below `flow_keep`)
        loses its ID: geometry alone never carries an identity across an appearance change.
        """
        by_number = {i.number: i for i in self.identities.values() if i.confirmed}
        sigs = signatures(frame.image, faces.boxes)
        for k, number in enumerate(faces.track_ids):
            ident = by_number.get(int(number))
            if ident is not None and float(sigs[k] @ ident.signature) < self.config.flow_keep:
                # The content under the box changed abruptly (a tile replaced, a cut): the flow
                # cannot tell who this is, so the face has no ID until the next detection
                # re-identifies it (`faces.track_ids` is changed in place).
                faces.track_ids[k] = -1
            elif ident is not None:
                ident.box = faces.boxes[k].copy()
                ident.signature = sigs[k]
                ident.last_t = frame.t
                if ident.tracklet is not None:
                    ident.tracklet.last_t = frame.t

    def _ready(self, ident: Identity, t: float) -> bool:
        c = self.config
        if ident.hits < c.min_hits:
            return False
        if ident.interrupts and ident.interrupts in self.identities:
            # Evidence of a new person: it lasted, and a good view did not match the other.
            return ident.distinct and t - ident.first_t >= c.tentative_max_s
        return ident.good_views > 0 or t - ident.first_t >= c.tentative_max_s

    def _distinct(self, ident: Identity, emb: F32) -> bool:
        """Whether a good view of a tentative identity is unlike the identity it interrupted."""
        other = self.identities.get(ident.interrupts)
        if other is None:
            return True
        gallery = other.gallery_array()
        return len(gallery) == 0 or self.appearance(emb, gallery) < self.config.keep_after_change

    def _add_to_gallery(self, ident: Identity, emb: F32) -> None:
        c = self.config
        ident.good_views += 1
        if ident.gallery:
            sims = np.stack(ident.gallery) @ emb
            if float(sims.max()) >= c.gallery_diversity:
                return  # nothing new about this face
            if len(ident.gallery) >= c.gallery_size:
                ident.gallery[int(np.argmax(sims))] = emb  # replace the closest view
                return
        ident.gallery.append(emb)

    def _drop_stale_tentatives(self, t: float) -> None:
        stale = [
            k
            for k, i in self.identities.items()
            if not i.confirmed and t - i.last_t > self.config.tentative_max_s
        ]
        for k in stale:
            del self.identities[k]
