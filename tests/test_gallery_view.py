"""A synthetic "gallery view" call built from real single-face clips: IDs must never switch.

Layout (2×2 tiles of 320×240 on 640×480, 10 fps):
  0.0–3.0 s  A top-left, B top-right, C bottom-left
  3.0–5.0 s  A and B swap tiles (gallery views reshuffle like this)
  5.0–6.5 s  C leaves the call
  6.5–8.5 s  C returns, in the bottom-right tile
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.analysis.stages import Stages
from stream.core.config import Config
from stream.offline.analyze import analyze_file

from .conftest import VIDEO

FPS = 10
TILE_W, TILE_H = 320, 240
# Clip and the square (x, y, side) cut around its face, so that every participant sits centred
# in their tile at a similar size, as in a real gallery view: after a swap the boxes overlap
# (IoU > 0.5) and only appearance can tell who is who.
SOURCES = {
    "A": ("pyfeat_single_face.mp4", (113, 0, 360)),
    "B": ("fer_woman2.mp4", (145, 6, 290)),
    "C": ("pyfeat_WolfgangLanger_Pexels.mp4", (263, 0, 360)),
}
TILES = {"TL": (0, 0), "TR": (TILE_W, 0), "BL": (0, TILE_H), "BR": (TILE_W, TILE_H)}


def layout(t: float) -> dict[str, str]:
    """Person per tile at time t."""
    if t < 3.0:
        return {"TL": "A", "TR": "B", "BL": "C"}
    if t < 5.0:
        return {"TL": "B", "TR": "A", "BL": "C"}
    if t < 6.5:
        return {"TL": "B", "TR": "A"}
    return {"TL": "B", "TR": "A", "BR": "C"}


def _clip_frames(name: str, square: tuple[int, int, int]) -> Iterator[np.ndarray]:
    """Frames of a clip at about FPS, cut around the face, centred in a tile, looping forever."""
    x, y, side = square
    while True:
        with av.open(str(VIDEO / name)) as c:
            next_t = 0.0
            for f in c.decode(video=0):
                if f.time is None or f.time + 1e-3 < next_t:
                    continue
                next_t += 1 / FPS
                cut = f.to_ndarray(format="bgr24")[y : y + side, x : x + side]
                img = cv2.resize(cut, (TILE_H, TILE_H), interpolation=cv2.INTER_AREA)
                tile = np.full((TILE_H, TILE_W, 3), 40, np.uint8)
                y0, x0 = (TILE_H - img.shape[0]) // 2, (TILE_W - img.shape[1]) // 2
                tile[y0 : y0 + img.shape[0], x0 : x0 + img.shape[1]] = img
                yield tile


def build_gallery_video(path: Path, seconds: float = 8.5) -> None:
    """Write the gallery-view clip as H.264 MP4."""
    streams = {k: _clip_frames(*v) for k, v in SOURCES.items()}
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 640, 480, "yuv420p"
        vs.time_base = Fraction(1, FPS)
        for i in range(int(seconds * FPS)):
            canvas = np.full((480, 640, 3), 20, np.uint8)
            tiles = {p: next(s) for p, s in streams.items()}  # every clip keeps playing
            for tile, person in layout(i / FPS).items():
                x, y = TILES[tile]
                canvas[y : y + TILE_H, x : x + TILE_W] = tiles[person]
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            frame.pts = i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)


def _tile_of(box: tuple[float, float, float, float]) -> str:
    cx, cy = (box[0] + box[2]) / 2 * 640, (box[1] + box[3]) / 2 * 480
    return ("T" if cy < TILE_H else "B") + ("L" if cx < TILE_W else "R")


@pytest.fixture(scope="module")
def gallery_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gallery") / "gallery_view.mp4"
    build_gallery_video(path)
    return path


@pytest.mark.integration
def test_gallery_view_has_zero_id_switches(
    gallery_clip: Path, config: Config, stages: Stages
) -> None:
    result = analyze_file(gallery_clip, config, stages=stages, fps=FPS)
    id_of: dict[str, set[int]] = {}
    person_of: dict[int, set[str]] = {}
    observations = 0
    for number, points in result.timelines.items():
        for p in points:
            person = layout(p.t).get(_tile_of(p.sample.box))
            assert person is not None, f"Face {number} at {p.t:.1f} s is in an empty tile"
            id_of.setdefault(person, set()).add(number)
            person_of.setdefault(number, set()).add(person)
            observations += 1
    print(f"gallery view: {observations} face observations, ids per person {id_of}")
    assert set(id_of) == {"A", "B", "C"}
    switches = sum(len(v) - 1 for v in id_of.values()) + sum(len(v) - 1 for v in person_of.values())
    assert switches == 0, f"ID switches: person->ids {id_of}, id->persons {person_of}"
    # Numbering follows first appearance; C keeps its ID after leaving and returning.
    assert sorted(n for s in id_of.values() for n in s) == [1, 2, 3]
    c_times = [p.t for p in result.timelines[next(iter(id_of["C"]))]]
    assert min(c_times) < 1.0 and max(c_times) > 7.0
    # Every person is found in nearly every frame they are on screen.
    expected = sum(len(layout(i / FPS)) for i in range(result.frames))
    assert observations >= 0.9 * expected, (observations, expected)
