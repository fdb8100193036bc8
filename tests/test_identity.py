"""One stable ID per person on meeting galleries (tests/compose_gallery.py), offline and live.

The composites hold tile reorders, same-instant replacements by look-alikes, a speaker view,
absences of 10+ s and returns from another photo. Offline, tracklets are consolidated after the
pass; live stays online. Each test prints IDs vs people, switches, merges and IDF1 (`-s`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.analysis.consolidate import TrackletView, consolidate
from stream.analysis.stages import Stages
from stream.analysis.summary import Analysis
from stream.core.config import Config
from stream.core.types import U8, VideoFrame
from stream.live.testing import run_session
from stream.offline.analyze import analyze_file
from stream.offline.media import read_frames

from .compose_gallery import (
    SCENARIOS,
    IdentityMetrics,
    Scenario,
    identity_metrics,
    render_frames,
    write_video,
)
from .conftest import VIDEO

FPS = 5.0  # analysed frames per second (the composites are 10 fps)


def _find_face(stages: Stages):  # type: ignore[no-untyped-def]
    detector = stages.vision_models.detector

    def find(img: U8) -> tuple[float, float, float, float] | None:
        d = detector(VideoFrame(img, 0.0))
        if len(d) == 0:
            return None
        k = int(np.argmax(d.boxes[:, 2] - d.boxes[:, 0]))
        x1, y1, x2, y2 = (float(v) for v in d.boxes[k])
        return x1, y1, x2, y2

    return find


@pytest.fixture(scope="module")
def composites(tmp_path_factory: pytest.TempPathFactory, stages: Stages) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("identity")
    return {
        k: write_video(make(), _find_face(stages), folder / f"{k}.mp4")
        for k, make in SCENARIOS.items()
    }


def _offline_metrics(scenario: Scenario, result: Analysis) -> IdentityMetrics:
    faces = [
        (p.t, n, (p.sample.box[0] + p.sample.box[2]) / 2 * scenario.width,
         (p.sample.box[1] + p.sample.box[3]) / 2 * scenario.height)
        for n, points in result.timelines.items()
        for p in points
    ]  # fmt: skip
    times = [i / FPS for i in range(result.frames)]
    return identity_metrics(scenario, times, faces)


def _assert_one_id_per_person(
    m: IdentityMetrics, scenario: Scenario, hold_s: float, missed: float = 0.02
) -> None:
    assert m.merges == 0, m.ids_of
    assert m.switches == 0, m.ids_of
    assert m.ids == m.people, m.ids_of
    assert m.idf1 >= 0.95
    # The faces are found at all; a newcomer in a tile just left by someone else stays
    # tentative (no ID) for `hold_s`: a new person needs evidence.
    allowed = missed * (m.observations + m.missed) + scenario.newcomers * hold_s * FPS
    assert m.missed <= allowed, (m.missed, allowed)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_offline_one_id_per_person(
    name: str, composites: dict[str, Path], config: Config, stages: Stages
) -> None:
    scenario = SCENARIOS[name]()
    result = analyze_file(composites[name], config, stages=stages, fps=FPS)
    m = _offline_metrics(scenario, result)
    print(f"\n{name} offline: {m.line()}")
    _assert_one_id_per_person(m, scenario, config.tracking.tentative_max_s)
    identity = result.to_dict()["identity"]
    assert identity["consolidated"] and identity["people"] == m.people
    # Faces are numbered by first appearance.
    firsts = [f.first_seen for f in sorted(result.faces, key=lambda f: f.number)]
    assert firsts == sorted(firsts)


@pytest.mark.integration
def test_consolidation_joins_what_the_online_tracker_split(
    composites: dict[str, Path], config: Config, stages: Stages
) -> None:
    """With returns and reordered tiles made impossible online (a margin no match can have),
    every reorder and return splits an ID; consolidation over the whole file joins them back
    without joining the look-alikes."""
    scenario = SCENARIOS["2x2"]()
    strict = config.replace("tracking", reid_margin=0.99)
    online = analyze_file(
        composites["2x2"], strict.replace("tracking", consolidate=False), stages=stages, fps=FPS
    )
    m0 = _offline_metrics(scenario, online)
    result = analyze_file(composites["2x2"], strict, stages=stages, fps=FPS)
    m = _offline_metrics(scenario, result)
    identity = result.to_dict()["identity"]
    print(f"\n2x2 online, no returns: {m0.line()}\n2x2 consolidated:       {m.line()}")
    print("joins:", [(j["tracklets"], j["joined"], j["similarity"]) for j in identity["joins"]])
    assert m0.ids >= m.people + 5 and m0.merges == 0  # the online tracker split, never merged
    # Each split waits to be confirmed.
    _assert_one_id_per_person(m, scenario, config.tracking.tentative_max_s, missed=0.05)
    assert len(identity["joins"]) == m0.ids - m.people
    assert min(j["similarity"] for j in identity["joins"]) >= config.tracking.join_threshold


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_live_one_id_per_person(name: str, stages: Stages) -> None:
    """A composite played as the camera of a live session (online tracker only)."""
    scenario = SCENARIOS[name]()
    step = round(scenario.fps / FPS)
    frames = [
        VideoFrame(f.image, f.t, k)
        for k, f in enumerate(
            f for f in render_frames(scenario, _find_face(stages)) if f.index % step == 0
        )
    ]
    # Detection on every frame, whatever the machine's load: under load the live budget detects
    # every 2nd-4th frame with optical flow between, and at this composite's 5 analysed fps
    # (0.2 s between frames) that split one person (7 IDs, 1 switch, IDF1 0.975): a known limit.
    cfg = stages.config.replace("live", detect_every_max=1)
    events, _ = asyncio.run(run_session(Stages(cfg, stages.factory), video=frames))
    faces = []
    times = []
    for e in events:
        if e["type"] != "frame":
            continue
        times.append(e["media_t"])
        for f in e["faces"]:
            x1, y1, x2, y2 = f["box"]
            faces.append(
                (e["media_t"], f["id"], (x1 + x2) / 2 * scenario.width,
                 (y1 + y2) / 2 * scenario.height)
            )  # fmt: skip
    m = identity_metrics(scenario, times, faces)
    print(f"\n{name} live: {m.line()}")
    assert len(times) == len(frames)
    _assert_one_id_per_person(m, scenario, cfg.tracking.tentative_max_s)


def _view(key: int, number: int, t0: float, t1: float, *vecs: list[float]) -> TrackletView:
    e = np.asarray(vecs, np.float32)
    return TrackletView(key, number, t0, t1, e / np.linalg.norm(e, axis=1, keepdims=True))


def test_consolidate_rules() -> None:
    a, b, c = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.1, 0.0]
    views = [
        _view(1, 2, 0.0, 5.0, a),
        _view(2, 1, 1.0, 9.0, b),
        _view(3, 3, 10.0, 12.0, c),  # a return: like 1, not like 2
    ]
    r = consolidate(views, 0.66, 0.05)
    assert {n: [tr.key for tr in trs] for n, trs in r.people.items()} == {1: [1, 3], 2: [2]}
    assert r.number_at(3, 11.0) == 1 and r.number_at(1, 2.0) == 2  # by first appearance
    assert [(j.tracklets, j.joined) for j in r.joins] == [((1,), (3,))]
    assert r.to_dict()["joins"][0]["similarity"] > 0.99
    # Identical but in the same frames: two people, never joined.
    twin = _view(4, 4, 3.0, 4.0, a)
    assert len(consolidate([views[0], twin], 0.66, 0.05).people) == 2
    # Now tracklet 3 could be 1 or 4 (as similar, and they were in one frame): not joined.
    r = consolidate([*views, twin], 0.66, 0.05)
    assert len(r.people) == 4 and not r.joins
    # Below the threshold nothing is joined.
    assert len(consolidate(views, 0.999, 0.0).people) == 3


def _interrupt_run(sequence: str, config: Config) -> list[int]:
    """Public IDs a tracker gives one face at a fixed place, frame by frame at 5 fps, where
    `sequence` names who is there each frame ("A" keeps coming back; others interrupt)."""
    from stream.core.types import FaceDetections
    from stream.vision.quality import Quality
    from stream.vision.tracker import IdentityTracker

    rng = np.random.default_rng(0)
    looks = {p: rng.integers(0, 255, (200, 200, 3), dtype=np.uint8) for p in set(sequence)}
    vectors = {p: np.eye(8, dtype=np.float32)[k] for k, p in enumerate(sorted(set(sequence)))}
    if "a" in vectors:  # "a": A disturbed (another picture, an embedding still like A's)
        v = vectors["A"] + 0.3 * vectors["a"]
        vectors["a"] = v / np.linalg.norm(v)
    who = ["A"]
    tracker = IdentityTracker(
        config.tracking,
        embed=lambda crops: np.stack([vectors[who[0]]] * len(crops)),
        quality=lambda crop, lm, size: Quality(size, 100.0, 0.0, True),
    )
    box = np.asarray([[50, 50, 150, 150]], np.float32)
    lms = np.asarray([[[80, 85], [120, 85], [100, 105], [85, 125], [115, 125]]], np.float32)
    out = []
    for i, person in enumerate(sequence):
        who[0] = person
        faces = FaceDetections(box, np.ones(1, np.float32), lms)
        ids = tracker.update(VideoFrame(looks[person], i / FPS, i), faces).track_ids
        out.append(int(ids[0]))
    return out


def test_a_disturbed_face_never_gets_a_second_id(config: Config) -> None:
    """A blink, a turn, a hand or a blurred frame in a steady tile: a face that appears for a
    few frames at an identity's place and gives way to it again is that identity (online)."""
    for gap in (1, 2, 4):  # 0.2, 0.4 and 0.8 s
        ids = _interrupt_run("A" * 8 + "X" * gap + "A" * 8, config)
        print(f"interrupted {gap / FPS:.1f} s: {ids}")
        assert set(ids) == {-1, 1}, ids  # no phantom "Face 2"
        assert ids[8 : 8 + gap] == [-1] * gap and ids[8 + gap :] == [1] * 8
    # A disturbance that still looks like the person (similar embedding) keeps their ID.
    ids = _interrupt_run("A" * 8 + "a" * 3 + "A" * 4, config)
    print(f"a similar view: {ids}")
    assert set(ids[1:]) == {1}, ids
    # A newcomer who stays (a same-instant replacement) gets an ID after tentative_max_s.
    ids = _interrupt_run("A" * 8 + "B" * 10, config)
    hold = round(config.tracking.tentative_max_s * FPS)
    print(f"replaced: {ids}")
    assert ids[8 : 8 + hold] == [-1] * hold and set(ids[8 + hold :]) == {2}


def test_consolidation_folds_a_short_face_into_the_track_it_interrupts() -> None:
    """Files: a sub-second face in a gap of another face's track is that face when appearance
    allows; one that stays apart says why."""
    a, b, blur = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.1, 0.9]
    views = [
        _view(1, 1, 0.0, 3.8, a),
        _view(2, 2, 0.0, 9.0, b),  # another person, on screen throughout
        _view(3, 3, 4.0, 4.2, blur),  # a blurred moment of person 1 (0.2 s)
        _view(4, 1, 4.4, 9.0, a),
    ]
    r = consolidate(views, 0.66, 0.05)
    assert {n: [tr.key for tr in trs] for n, trs in r.people.items()} == {1: [1, 3, 4], 2: [2]}
    assert [(j.tracklets, j.joined, j.reason) for j in r.joins] == [((1, 4), (3,), "interrupted")]
    assert not r.notes and r.to_dict()["joins"][0]["reason"] == "interrupted"
    # Resembling the person who is on screen at the same time does not matter (never joined).
    views[2] = _view(3, 3, 4.0, 4.2, [0.0, 0.9, 0.1])
    r = consolidate(views, 0.66, 0.05)
    assert len(r.people) == 2 and r.joins[0].reason == "interrupted"
    # A short face that resembles a third person (absent then, not joined: the threshold is
    # out of reach) more stays apart, and says why.
    c = _view(5, 4, 10.0, 12.0, [0.0, 0.0, 1.0])
    r = consolidate([*views[:2], _view(3, 3, 4.0, 4.2, [0.1, 0.0, 1.0]), views[3], c], 1.1, 0.05)
    short = next(n for n, trs in r.people.items() if trs[0].key == 3)
    assert "looks unlike it" in r.note(short), r.to_dict()
    assert r.to_dict()["faces"][short - 1]["note"].startswith("brief, kept apart")
    # A short face in a free place (nobody's track broken) stays, and says so; so does one seen
    # twice briefly (0.4 s on screen over 10 s).
    r = consolidate([views[0], _view(6, 5, 20.0, 20.4, b)], 0.66, 0.05)
    assert "no other face was missing" in r.note(2) and not r.note(1)
    r = consolidate([views[0], _view(6, 5, 20.0, 20.2, b), _view(7, 5, 30.0, 30.2, b)], 0.66, 0.05)
    assert "no other face was missing" in r.note(2)


def _first_frame(path: Path) -> U8:
    return next(iter(read_frames(path, 30.0))).image


@pytest.mark.integration
def test_an_expressive_face_skips_the_embedder_and_a_swapped_face_does_not(
    config: Config, stages: Stages, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One expressive face on every frame (fer_woman2): the detector's box differs from the
    flow-moved one by a few percent, which alone failed the thumbnail check on 41 of 154
    detections (each then embedded); compared aligned it passes, and the embedder runs about
    every `reverify_s`. Another person's face in the same box still fails the check."""
    from stream.vision.embed import FaceEmbedder
    from stream.vision.tracker import aligned_similarity, signatures

    calls = []
    embed = FaceEmbedder.embed_aligned

    def counted(self: FaceEmbedder, aligned: U8) -> object:
        calls.append(len(aligned))
        return embed(self, aligned)

    monkeypatch.setattr(FaceEmbedder, "embed_aligned", counted)
    clip = VIDEO / "fer_woman2.mp4"
    cfg = config.replace("audio", enabled=False).replace("analyze", fps=29.97)
    result = analyze_file(clip, cfg, stages)
    print(f"fer_woman2: {sum(calls)} faces embedded over {result.frames} frames")
    assert len(result.faces) == 1
    assert sum(calls) <= 15  # measured 9 (43 before the aligned check); reverify_s 2 s: 8

    find = _find_face(stages)
    mine, other = _first_frame(clip), _first_frame(VIDEO / "pyfeat_single_face.mp4")
    box, theirs = find(mine), find(other)
    assert box is not None and theirs is not None
    b = np.array(box, np.float32)
    sig = signatures(mine, b[None])[0]
    shifted = b + np.float32(0.025) * (b[2] - b[0]) * np.array([1, -1, 1, -1], np.float32)
    plain = float(signatures(mine, shifted[None])[0] @ sig)
    aligned = aligned_similarity(mine, shifted, sig)
    # Another person's face, cut at their box and pasted over this one's.
    x1, y1, x2, y2 = (round(v) for v in box)
    tx1, ty1, tx2, ty2 = (round(v) for v in theirs)
    swapped = mine.copy()
    swapped[y1:y2, x1:x2] = cv2.resize(other[ty1:ty2, tx1:tx2], (x2 - x1, y2 - y1))
    swap = aligned_similarity(swapped, b, sig)
    print(
        f"same face, box moved 2.5%: plain {plain:.3f}, aligned {aligned:.3f}; swapped {swap:.3f}"
    )
    certain = config.tracking.appearance_certain
    assert aligned >= certain and aligned > plain and swap < certain
