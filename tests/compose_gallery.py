"""Meeting-gallery recordings with ground truth, built from real single-face clips and photos.

Each participant is a source: a single-face video clip (it keeps playing) or an identity photo
animated with small motion, zoom, rotation and light changes (the clips alone hold few distinct
people). A scenario places participants in the tiles of a 2x2 or 3x3 gallery over time: tile
reorders, a participant replaced by another in the same tile at the same instant, a speaker
view (one face fills the frame), absences of 10+ s and look-alike pairs (the most similar
different-person pairs of the photo set by our embedder: same sex and age band, glasses).
Effects disturb a face for a moment in a steady tile (no layout change): a blink, a head turn,
a hand over the face, a frame of motion blur; the person must keep their ID through them.

`identity_metrics` scores a run: IDs vs people, ID switches, merges and IDF1 (Ristani et al.
2016: the share of observations whose ID is the one globally matched to their person).
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from stream.core.types import VideoFrame

from .conftest import MEDIA, VIDEO

Image = npt.NDArray[np.uint8]
Rect = tuple[int, int, int, int]  # x, y, w, h in pixels
#: Finds the face in an image: box x1, y1, x2, y2 in pixels (largest face), or None.
FindFace = Callable[[Image], tuple[float, float, float, float] | None]

IDENTITIES = MEDIA / "identities"
FULL = "full"  # the speaker-view "tile": the whole frame

#: Participants: a clip in ../shared/media/video or a photo in ../shared/media/identities.
SOURCES: dict[str, str] = {
    "man_webcam": "video/pyfeat_single_face.mp4",
    "woman_talking": "video/fer_woman2.mp4",
    "woman_pexels": "video/pyfeat_WolfgangLanger_Pexels.mp4",
    "obama": "identities/face_recognition/obama.jpg",
    "biden": "identities/face_recognition/biden.jpg",
    "jolie": "identities/facenet_pytorch/angelina_jolie_1.jpg",
    "siegel": "identities/facenet_pytorch/kate_siegel_1.jpg",  # look-alike of jolie (0.54)
    "amy": "identities/faceapijs/bbt_amy1.png",
    "bernadette": "identities/faceapijs/bbt_bernadette1.png",  # amy's: both glasses
    "howard": "identities/faceapijs/bbt_howard1.png",
    "leonard": "identities/faceapijs/bbt_leonard1.png",
    "penny": "identities/faceapijs/bbt_penny1.png",
    "raj": "identities/faceapijs/bbt_raj1.png",
    "sheldon": "identities/faceapijs/bbt_sheldon1.png",
    "stuart": "identities/faceapijs/bbt_stuart1.png",  # look-alike of sheldon (0.38)
    "bernadette~2": "identities/faceapijs/bbt_bernadette2.png",  # same person, other photo
    "rose": "identities/face_recognition/rose_leslie1.jpg",
}


def person_of(source: str) -> str:
    """The person a source shows ("bernadette~2" is bernadette from another photo)."""
    return source.split("~")[0]


@dataclass(frozen=True)
class Segment:
    """A source (`SOURCES` key) shown in a tile ("r,c" or FULL) from `start` to `end` s."""

    person: str
    tile: str
    start: float
    end: float


#: Short disturbances of one face (`Effect.kind`).
EFFECTS = ("blink", "turn", "hand", "blur")


@dataclass(frozen=True)
class Effect:
    """A face disturbed for a moment in a steady tile: its eyes closed ("blink"), the head
    turned sideways and back ("turn"), a hand raised over the face and lowered ("hand"), or the
    picture smeared by fast motion ("blur"); from `start` to `end` s."""

    kind: str
    tile: str
    start: float
    end: float

    def amount(self, t: float) -> float:
        """How strong the effect is at time t: 0 outside, a ramp up and down for movements."""
        if not self.start <= t < self.end:
            return 0.0
        if self.kind in ("turn", "hand"):
            return math.sin(math.pi * (t - self.start + 0.05) / (self.end - self.start + 0.1))
        return 1.0


@dataclass(frozen=True)
class Scenario:
    """A gallery recording: grid, size, duration and who is where when."""

    name: str
    cols: int
    rows: int
    width: int
    height: int
    seconds: float
    segments: tuple[Segment, ...]
    fps: int = 10
    effects: tuple[Effect, ...] = ()

    def rect(self, tile: str) -> Rect:
        if tile == FULL:
            return (0, 0, self.width, self.height)
        r, c = (int(v) for v in tile.split(","))
        w, h = self.width // self.cols, self.height // self.rows
        return (c * w, r * h, w, h)

    def truth(self, t: float) -> list[tuple[str, Rect]]:
        """Who is visible at media time t, and in which rectangle."""
        return [
            (person_of(s.person), self.rect(s.tile)) for s in self.segments if s.start <= t < s.end
        ]

    def person_at(self, t: float, cx: float, cy: float) -> str | None:
        """The participant whose rectangle holds the point (pixels) at time t."""
        for person, (x, y, w, h) in self.truth(t):
            if x <= cx < x + w and y <= cy < y + h:
                return person
        return None

    @property
    def newcomers(self) -> int:
        """People who first appear after the start (each waits `tracking.tentative_max_s` for
        an ID when they take the tile of someone who just left: a new person needs evidence)."""
        firsts: dict[str, float] = {}
        for s in self.segments:
            p = person_of(s.person)
            firsts[p] = min(firsts.get(p, s.start), s.start)
        return sum(1 for t in firsts.values() if t > 0)

    @property
    def people(self) -> set[str]:
        return {person_of(s.person) for s in self.segments}

    @property
    def sources(self) -> set[str]:
        return {s.person for s in self.segments}


def _layout(
    placements: Iterable[tuple[float, float, dict[str, str]]],
) -> tuple[Segment, ...]:
    """Segments from (start, end, {tile: person}) phases, merging a person's consecutive
    phases in the same tile into one segment."""
    out: list[Segment] = []
    for start, end, tiles in placements:
        for tile, person in tiles.items():
            prev = next(
                (
                    k
                    for k, s in enumerate(out)
                    if s.person == person and s.tile == tile and abs(s.end - start) < 1e-9
                ),
                None,
            )
            if prev is not None:
                out[prev] = Segment(person, tile, out[prev].start, end)
            else:
                out.append(Segment(person, tile, start, end))
    return tuple(out)


def gallery_2x2() -> Scenario:
    """30 s, 640x480: a look-alike replaces a participant in the same tile at the same instant,
    a speaker view, a reorder, a 14 s absence and return into another tile, a second replacement;
    blinks, head turns, a hand over the face and motion blur in steady tiles."""
    a, b, c, d = "0,0", "0,1", "1,0", "1,1"
    effects = (  # steady tiles, 0-8 s
        Effect("blink", a, 1.0, 1.3),
        Effect("turn", b, 2.0, 3.0),
        Effect("hand", d, 3.4, 4.4),
        Effect("blur", c, 5.0, 5.2),
        Effect("turn", d, 6.0, 6.8),
        Effect("blur", b, 7.0, 7.2),
    )
    phases = [
        (0.0, 8.0, {a: "man_webcam", b: "jolie", c: "woman_talking", d: "obama"}),
        (8.0, 12.0, {a: "man_webcam", b: "siegel", c: "woman_talking", d: "obama"}),
        (12.0, 15.0, {FULL: "woman_talking"}),
        (15.0, 20.0, {a: "obama", b: "woman_talking", c: "siegel", d: "man_webcam"}),
        (20.0, 24.0, {a: "obama", b: "woman_talking", c: "siegel", d: "jolie"}),
        (24.0, 30.0, {a: "woman_pexels", b: "woman_talking", c: "siegel", d: "jolie"}),
    ]
    return Scenario("gallery_2x2", 2, 2, 640, 480, 30.0, _layout(phases), effects=effects)


def gallery_3x3() -> Scenario:
    """45 s, 960x540: nine tiles; a look-alike replaces a participant in the same tile at the
    same instant (and the other way round later), a departure, three reorders, a speaker view,
    returns after 14 s (from another photo) and 20 s absences while others are absent too, and
    the closest look-alike pair of the photo set (cosine 0.54) replacing one another; blinks,
    head turns, hands over faces and motion blur in steady tiles (0-10 s and 24-30 s)."""
    t = [f"{r},{c}" for r in range(3) for c in range(3)]
    first = ["amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "rose"]
    p0 = dict(zip(t, [*first, "man_webcam"], strict=True))
    # 10 s: stuart replaces his look-alike sheldon in the same tile; bernadette leaves.
    p1 = {**p0, t[6]: "stuart"}
    del p1[t[1]]
    # 14 s: the app reorders the gallery.
    order = ["rose", "penny", "stuart", "amy", "man_webcam", "howard", "leonard", "raj"]
    p2 = dict(zip(t[:8], order, strict=True))
    # 22 s: back from the speaker view, reordered again; 24 s: bernadette returns.
    order3 = ["raj", "amy", "leonard", "rose", "howard", "stuart", "man_webcam", "penny"]
    p3 = dict(zip(t[:8], order3, strict=True))
    p4 = {**p3, t[8]: "bernadette~2"}
    # 30 s: sheldon returns in stuart's tile as stuart leaves; howard -> woman_talking.
    p5 = {**p4, t[5]: "sheldon", t[4]: "woman_talking"}
    # 36 s: reorder.
    order6 = ["sheldon", "bernadette~2", "raj", "penny", "leonard", "woman_talking"]
    p6 = dict(zip(t[:6], order6, strict=True))
    p6.update({t[6]: "man_webcam", t[7]: "amy", t[8]: "jolie"})
    # 40 s: jolie's look-alike siegel replaces her in the same tile.
    p7 = {**p6, t[8]: "siegel"}
    phases = [
        (0.0, 10.0, p0),
        (10.0, 14.0, p1),
        (14.0, 18.0, p2),
        (18.0, 22.0, {FULL: "raj"}),
        (22.0, 24.0, p3),
        (24.0, 30.0, p4),
        (30.0, 36.0, p5),
        (36.0, 40.0, p6),
        (40.0, 45.0, p7),
    ]
    effects = (
        Effect("blink", t[0], 1.0, 1.3),
        Effect("turn", t[2], 2.0, 3.0),
        Effect("hand", t[4], 3.0, 4.0),
        Effect("blur", t[7], 4.0, 4.2),
        Effect("turn", t[8], 5.0, 5.8),  # the clip participant
        Effect("hand", t[3], 6.0, 6.8),
        Effect("blink", t[5], 7.0, 7.4),
        Effect("blur", t[1], 8.0, 8.2),
        Effect("turn", t[6], 8.4, 9.4),
        Effect("turn", t[0], 25.0, 26.0),
        Effect("blur", t[4], 26.2, 26.4),
        Effect("hand", t[8], 27.0, 28.0),  # bernadette, back from another photo
        Effect("blink", t[2], 28.2, 28.5),
    )
    return Scenario("gallery_3x3", 3, 3, 960, 540, 45.0, _layout(phases), effects=effects)


SCENARIOS: dict[str, Callable[[], Scenario]] = {"2x2": gallery_2x2, "3x3": gallery_3x3}


class _Participant:
    """Renders one participant into a rectangle of any size at any time."""

    def __init__(self, person: str, find_face: FindFace, fps: int) -> None:
        self.person = person
        src = MEDIA / SOURCES[person]
        self.is_clip = src.parent == VIDEO
        if self.is_clip:
            self.frames = _decode(src, fps)
        else:
            img = cv2.imread(str(src), cv2.IMREAD_COLOR)
            if img is None:
                raise RuntimeError(f"cannot read {src}")
            self.frames = [np.asarray(img, np.uint8)]
        box = find_face(self.frames[0])
        if box is None:
            raise RuntimeError(f"no face found in {src}")
        x1, y1, x2, y2 = box
        self.cx, self.cy = (x1 + x2) / 2, (y1 + y2) / 2
        self.side = max(x2 - x1, y2 - y1)
        self.fps = fps
        rng = np.random.default_rng(zlib.crc32(person.encode()))
        self.phase = rng.uniform(0, 2 * math.pi, 5)
        self.background = tuple(int(v) for v in rng.integers(30, 90, 3))

    def render(
        self, t: float, w: int, h: int, face_frac: float = 0.5, effect: Effect | None = None
    ) -> Image:
        """The participant at time t in a w x h rectangle, the face about `face_frac` of h,
        disturbed by `effect` if one is active."""
        src = self.frames[round(t * self.fps) % len(self.frames)]
        p = self.phase
        zoom, angle, dx, dy, gain = 1.0, 0.0, 0.0, 0.0, 1.0
        if not self.is_clip:  # a still photo breathes like a webcam picture
            zoom = 1 + 0.06 * math.sin(2 * math.pi * t / 3.7 + p[0])
            angle = 3.0 * math.sin(2 * math.pi * t / 4.1 + p[1])
            dx = 0.05 * math.sin(2 * math.pi * t / 2.9 + p[2])
            dy = 0.03 * math.sin(2 * math.pi * t / 3.3 + p[3])
            gain = 1 + 0.12 * math.sin(2 * math.pi * t / 5.3 + p[4])
        scale = face_frac * h / self.side * zoom
        m = cv2.getRotationMatrix2D((self.cx, self.cy), angle, scale)
        m[0, 2] += w / 2 - self.cx + dx * w
        m[1, 2] += h / 2 - self.cy + dy * h
        out = cv2.warpAffine(
            src,
            m,
            (w, h),
            flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=self.background,
        )
        if gain != 1.0:
            out = cv2.convertScaleAbs(out, alpha=gain, beta=0)
        tile = np.asarray(out, np.uint8)
        if effect is not None and effect.amount(t) > 0:
            cx, cy = w / 2 + dx * w, h / 2 + dy * h
            tile = _disturb(tile, effect.kind, effect.amount(t), cx, cy, self.side * scale)
        return tile


def _disturb(img: Image, kind: str, amount: float, cx: float, cy: float, side: float) -> Image:
    """Apply an `Effect` to a tile whose face is centred at (cx, cy) with box side `side`."""
    out = img.copy()
    if kind == "blink":  # eyelids closed: the eye band takes the colour of the cheeks
        skin = np.median(
            img[
                int(cy + 0.05 * side) : int(cy + 0.2 * side), int(cx - 0.3 * side) : int(cx)
            ].reshape(-1, 3),
            axis=0,
        )
        for ex in (cx - 0.2 * side, cx + 0.2 * side):
            center = (int(ex), int(cy - 0.1 * side))
            axes = (int(0.13 * side), int(0.06 * side))
            cv2.ellipse(out, center, axes, 0, 0, 360, tuple(float(v) for v in skin), -1)
        return np.asarray(cv2.GaussianBlur(out, (3, 3), 0), np.uint8)
    if kind == "turn":  # the head turns sideways: the face's far side recedes and narrows
        s = side * 0.6
        src = np.asarray(
            [[cx - s, cy - s], [cx + s, cy - s], [cx + s, cy + s], [cx - s, cy + s]], np.float32
        )
        squeeze = 0.55 * amount * s
        dst = np.asarray(
            [
                [cx - s + 0.4 * squeeze, cy - s],
                [cx + s - 1.6 * squeeze, cy - s + 0.25 * squeeze],
                [cx + s - 1.6 * squeeze, cy + s - 0.25 * squeeze],
                [cx - s + 0.4 * squeeze, cy + s],
            ],
            np.float32,
        )
        m = cv2.getPerspectiveTransform(src, dst)
        h, w = img.shape[:2]
        bg = tuple(float(v) for v in img[2, 2])
        warped = cv2.warpPerspective(img, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=bg)
        return np.asarray(warped, np.uint8)
    if kind == "hand":  # a palm with fingers rises over the lower face, then goes down
        rise = (1 - amount) * 0.9 * side
        palm = (int(cx + 0.05 * side), int(cy + 0.35 * side + rise))
        colour = (120.0, 160.0, 205.0)
        cv2.ellipse(out, palm, (int(0.32 * side), int(0.26 * side)), -15, 0, 360, colour, -1)
        for k in range(4):
            x = palm[0] - 0.24 * side + k * 0.14 * side
            finger = (int(x), int(palm[1] - 0.3 * side - (0.04 * side if k in (1, 2) else 0)))
            cv2.ellipse(out, finger, (int(0.055 * side), int(0.2 * side)), 0, 0, 360, colour, -1)
        shade = cv2.GaussianBlur(out, (5, 5), 0)
        return np.asarray(shade, np.uint8)
    if kind == "blur":  # the camera or the head moved fast during the exposure
        n = max(3, int(0.3 * side)) | 1
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2, :] = 1.0 / n
        return np.asarray(cv2.filter2D(img, -1, kernel), np.uint8)
    raise ValueError(f"unknown effect {kind!r} (one of {EFFECTS})")


def _decode(path: Path, fps: int) -> list[Image]:
    """A clip's frames resampled to `fps`."""
    with av.open(str(path)) as c:
        frames = [(float(f.time or 0.0), f.to_ndarray(format="bgr24")) for f in c.decode(video=0)]
    times = [f[0] for f in frames]
    end = times[-1] + (times[-1] - times[-2])
    out = []
    for i in range(int(end * fps)):
        j = max(0, int(np.searchsorted(times, i / fps, side="right")) - 1)
        out.append(np.asarray(frames[j][1], np.uint8))
    return out


def render_frames(scenario: Scenario, find_face: FindFace) -> Iterator[VideoFrame]:
    """The scenario's frames at `scenario.fps` (what a camera would deliver)."""
    people = {p: _Participant(p, find_face, scenario.fps) for p in sorted(scenario.sources)}
    for i in range(int(scenario.seconds * scenario.fps)):
        t = i / scenario.fps
        canvas = np.full((scenario.height, scenario.width, 3), 18, np.uint8)
        for seg in scenario.segments:
            if not seg.start <= t < seg.end:
                continue
            x, y, w, h = scenario.rect(seg.tile)
            pad = 0 if w == scenario.width else 2  # gallery tiles have a thin gap
            frac = 0.42 if w == scenario.width else 0.5
            effect = next(
                (e for e in scenario.effects if e.tile == seg.tile and e.start <= t < e.end), None
            )
            tile = people[seg.person].render(t, w - 2 * pad, h - 2 * pad, frac, effect)
            canvas[y + pad : y + h - pad, x + pad : x + w - pad] = tile
        yield VideoFrame(canvas, t, i)


def write_video(scenario: Scenario, find_face: FindFace, path: Path) -> Path:
    """Render the scenario to an H.264 MP4 (as a meeting recording would be)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=scenario.fps)
        vs.width, vs.height, vs.pix_fmt = scenario.width, scenario.height, "yuv420p"
        vs.time_base = Fraction(1, scenario.fps)
        vs.options = {"crf": "23", "preset": "veryfast"}
        for frame in render_frames(scenario, find_face):
            vf = av.VideoFrame.from_ndarray(frame.image, format="bgr24")
            vf.pts = frame.index
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    return path


# -- metrics ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdentityMetrics:
    """How well predicted IDs follow people."""

    people: int
    ids: int
    switches: int  # a person's ID changed between consecutive observations
    merges: int  # extra people under one ID, summed over IDs
    idf1: float
    observations: int
    missed: int  # ground-truth appearances without a predicted face
    false: int  # predicted faces outside every participant's rectangle
    ids_of: dict[str, list[int]]

    def line(self) -> str:
        return (
            f"people {self.people} ids {self.ids} switches {self.switches} merges {self.merges} "
            f"IDF1 {self.idf1:.3f} (observations {self.observations}, missed {self.missed}, "
            f"false {self.false})"
        )


def _assignment(gain: npt.NDArray[np.float64]) -> list[tuple[int, int]]:
    """Maximum-gain one-to-one assignment (Hungarian algorithm, rectangular matrices)."""
    n, m = gain.shape
    size = max(n, m)
    cost = np.zeros((size, size))
    cost[:n, :m] = gain.max(initial=0.0) - gain
    u, v = np.zeros(size + 1), np.zeros(size + 1)
    match = np.zeros(size + 1, dtype=int)  # match[col] = row (1-based), 0 = free
    for i in range(1, size + 1):
        match[0] = i
        j0 = 0
        minv = np.full(size + 1, np.inf)
        used = np.zeros(size + 1, dtype=bool)
        way = np.zeros(size + 1, dtype=int)
        while True:
            used[j0] = True
            i0 = match[j0]
            delta, j1 = np.inf, 0
            for j in range(1, size + 1):
                if not used[j]:
                    cur = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(size + 1):
                if used[j]:
                    u[match[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    pairs = [(int(match[j]) - 1, j - 1) for j in range(1, m + 1)]
    return [(i, j) for i, j in pairs if 0 <= i < n]


def identity_metrics(
    scenario: Scenario, times: Iterable[float], faces: Iterable[tuple[float, int, float, float]]
) -> IdentityMetrics:
    """Score predicted faces against the scenario.

    Args:
        scenario: the ground truth.
        times: the analysed frames' media times.
        faces: (t, id, centre x, centre y in pixels) per predicted face.
    """
    gt_count: dict[str, int] = {}
    for t in times:
        for person, _ in scenario.truth(t):
            gt_count[person] = gt_count.get(person, 0) + 1
    seq: dict[str, list[tuple[float, int]]] = {}
    persons_of: dict[int, set[str]] = {}
    pred_count: dict[int, int] = {}
    false = 0
    for t, ident, cx, cy in faces:
        pred_count[ident] = pred_count.get(ident, 0) + 1
        who = scenario.person_at(t, cx, cy)
        if who is None:
            false += 1
            continue
        seq.setdefault(who, []).append((t, ident))
        persons_of.setdefault(ident, set()).add(who)
    switches = 0
    for obs in seq.values():
        obs.sort()
        switches += sum(1 for a, b in itertools.pairwise(obs) if a[1] != b[1])
    merges = sum(len(p) - 1 for p in persons_of.values())
    people = sorted(gt_count)
    ids = sorted(pred_count)
    gain = np.zeros((len(people), len(ids)))
    for i, person in enumerate(people):
        for _, ident in seq.get(person, []):
            gain[i, ids.index(ident)] += 1
    idtp = sum(gain[i, j] for i, j in _assignment(gain)) if ids and people else 0.0
    n_gt, n_pred = sum(gt_count.values()), sum(pred_count.values())
    idf1 = 2 * idtp / max(n_gt + n_pred, 1)
    observed = sum(len(v) for v in seq.values())
    return IdentityMetrics(
        people=len(people),
        ids=len(ids),
        switches=switches,
        merges=merges,
        idf1=float(idf1),
        observations=observed,
        missed=n_gt - observed,
        false=false,
        ids_of={p: sorted({i for _, i in seq.get(p, [])}) for p in people},
    )
