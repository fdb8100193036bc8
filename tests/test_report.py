"""Reports on real recordings: honest headlines, one shared time axis, an overview that scales.

Three recordings: a crowd built from 24 real identity photos (tiles that arrive and leave at
different times, so that faces have different visible spans), the Hamilton clip (5 faces, voice)
and a still photo. The HTML is checked as data (axes, order, self-contained) and, in headless
Chromium when it is installed, for the height of its overview at 1280x900.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.analysis import report
from stream.analysis.aggregate import UNCERTAIN_NOTE
from stream.analysis.stages import Stages
from stream.analysis.summary import Analysis
from stream.core.config import Config
from stream.core.types import VideoFrame
from stream.offline.analyze import analyze_file
from stream.vision.blendshapes import AU_NAMES

from .conftest import MEDIA, ROOT, VIDEO, imread, read_labels

CHROMIUM = os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium")
ARTIFACTS = ROOT / "test-artifacts"
FPS = 10
COLS, ROWS, TILE_W, TILE_H = 6, 4, 213, 180


def crowd_photos(stages: Stages, n: int) -> list[np.ndarray]:
    """`n` tiles, each one face from a different single-face identity photo, centred."""
    det = stages.vision_models.detector
    tiles: list[np.ndarray] = []
    people: set[str] = set()
    for row in read_labels(MEDIA / "identities" / "labels.csv"):
        if row["person"].startswith("MULTI") or "aligned" in row["file"]:
            continue
        if row["person"] in people and len(people) < n:  # distinct people first
            continue
        img = imread(MEDIA / "identities" / row["file"])
        found = det(VideoFrame(img, 0.0))
        if len(found.boxes) != 1:
            continue
        x1, y1, x2, y2 = found.boxes[0]
        s = (y2 - y1) / (0.6 * TILE_H)
        fx, fy = (x1 + x2) / 2 - TILE_W / 2 * s, (y1 + y2) / 2 - TILE_H / 2 * s
        m = np.array([[1 / s, 0, -fx / s], [0, 1 / s, -fy / s]], np.float32)
        tiles.append(cv2.warpAffine(img, m, (TILE_W, TILE_H), borderValue=(40, 40, 40)))
        people.add(row["person"])
        if len(tiles) == n:
            return tiles
    raise AssertionError(f"only {len(tiles)} usable photos")


def build_crowd_video(
    path: Path, stages: Stages, seconds: float = 6.0
) -> list[tuple[float, float]]:
    """A 6x4 grid of 24 faces; tile i is on screen during its (start, end) span (returned)."""
    tiles = crowd_photos(stages, COLS * ROWS)
    spans = [(0.3 * (i % 7), seconds - 0.4 * (i % 5)) for i in range(len(tiles))]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = COLS * TILE_W, ROWS * TILE_H, "yuv420p"
        vs.time_base = Fraction(1, FPS)
        for i in range(int(seconds * FPS)):
            t = i / FPS
            canvas = np.full((ROWS * TILE_H, COLS * TILE_W, 3), 20, np.uint8)
            for k, (tile, (t0, t1)) in enumerate(zip(tiles, spans, strict=True)):
                if t0 <= t < t1:
                    r, c = divmod(k, COLS)
                    canvas[r * TILE_H : (r + 1) * TILE_H, c * TILE_W : (c + 1) * TILE_W] = tile
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            frame.pts = i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    return spans


@pytest.fixture(scope="module")
def crowd(tmp_path_factory: pytest.TempPathFactory, config: Config, stages: Stages) -> Analysis:
    path = tmp_path_factory.mktemp("crowd") / "crowd.mp4"
    build_crowd_video(path, stages)
    return analyze_file(path, config, stages=stages, fps=FPS)


@pytest.fixture(scope="module")
def hamilton(config: Config, stages: Stages) -> Analysis:
    return analyze_file(VIDEO / "face_recognition_short_hamilton_clip.mp4", config, stages=stages)


def strips(html: str) -> list[str]:
    return re.findall(r"<svg class='strip' viewBox='0 0 1000 \d+'.*?</svg>", html)


def first_x(svg: str) -> float:
    """x of the first data rect (after the background bands) of a face strip."""
    xs = re.findall(r"<rect x='([\d.]+)' y='0' width", svg)
    return float(xs[0])


def overview_height(html_path: Path, width: int = 1280, height: int = 900) -> float | None:
    """Where the first section after the overview starts, as laid out by Chromium (CSS px)."""
    if not Path(CHROMIUM).is_file():
        return None
    probe = html_path.with_suffix(".probe.html")
    probe.write_text(
        html_path.read_text("utf-8").replace(
            "</body>",
            "<script>document.body.dataset.top = document.querySelector('h2').offsetTop</script>"
            "</body>",
        ),
        "utf-8",
    )
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--window-size={width},{height}",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    m = re.search(r'data-top="([\d.]+)"', out)
    assert m, out[:500]
    return float(m.group(1))


def screenshot(html_path: Path, png: Path, height: int) -> None:
    if Path(CHROMIUM).is_file():
        subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--screenshot={png}",
                f"--window-size=1280,{height}",
                html_path.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )


@pytest.mark.integration
def test_crowd_report_overview_first_and_one_time_axis(crowd: Analysis, tmp_path: Path) -> None:
    a = crowd
    t0 = time.perf_counter()
    path = tmp_path / "crowd.html"
    report.write_html(a, path)
    ms = (time.perf_counter() - t0) * 1e3
    html = path.read_text("utf-8")
    top = overview_height(path)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot(path, ARTIFACTS / "report-crowd.png", 2400)
    print(
        f"crowd: {len(a.faces)} faces, {a.info.duration:.1f} s; HTML {len(html) / 1e3:.0f} kB "
        f"in {ms:.0f} ms; overview ends at {top} px of a 1280x900 window"
    )
    assert len(a.faces) >= 20
    # Overview first: the room, then a card per face in face order, before any time section.
    over = html.index("Over time")
    cards = re.findall(r"<div class='card'>.*?<div class='name'>(Face \d+)</div>", html[:over])
    assert cards == [f.name for f in a.faces]
    assert html.index("Room overall") < html.index("<div class='card'>") < over
    if top is not None:
        assert top <= 900, f"the overview of {len(a.faces)} faces needs {top} px"
    # One time axis for the room and every face: 0 to the clip's end.
    span = report._span(a)
    assert abs(span - a.info.duration) < 1.5 / FPS, (span, a.info.duration)
    svgs = strips(html)
    assert len(svgs) == 1 + len(a.faces)  # the room, then one per face (no voice here)
    for f, svg in zip(a.faces, svgs[1:], strict=True):
        assert abs(first_x(svg) - 1000 * f.first_seen / span) < 0.01
    late = max(a.faces, key=lambda f: f.first_seen)
    assert late.first_seen > 1.0  # tiles arrive late, so a per-face axis would show it
    assert html.count("<div class='axis'>") == 2  # room, faces
    # Self-contained and printable: no scripts, no external files.
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "@media print" in html


@pytest.mark.integration
def test_hamilton_headlines_name_uncertainty_and_voice_spans_the_clip(
    hamilton: Analysis, tmp_path: Path
) -> None:
    a = hamilton
    lines = report.summary_lines(a)
    report.write_json(a, tmp_path / "h.json")
    report.write_csv(a, tmp_path / "h.csv")
    report.write_html(a, tmp_path / "h.html")
    data = json.loads((tmp_path / "h.json").read_text("utf-8"))
    html = (tmp_path / "h.html").read_text("utf-8")
    screenshot(tmp_path / "h.html", ARTIFACTS / "report-hamilton.png", 1500)
    print("\n".join(lines[:8]))
    # A face whose dominant state is "uncertain" itself says so without a second note.
    noted = [
        f for f in a.faces if f.uncertain_share >= UNCERTAIN_NOTE and f.dominant != "uncertain"
    ]
    assert noted, "the clip has faces that were mostly uncertain"
    assert all(
        next(x for x in lines if x.startswith(f.name + " "))
        .split("dominant: ")[1]
        .startswith("uncertain")
        for f in a.faces
        if f.dominant == "uncertain"
    )
    for f, fd in zip(a.faces, data["faces"], strict=True):
        assert fd["dominant"]["uncertain_share"] == round(f.shares["uncertain"], 4)
        line = next(x for x in lines if x.startswith(f.name + " "))
        assert ("· uncertain" in line) == (f in noted), line
        assert (f"{f.headline()}<br>" in html) and (("· uncertain" in f.headline()) == (f in noted))
    o = a.overall
    assert data["overall"]["dominant"]["uncertain_share"] == round(o.uncertain_share, 4)
    overall = next(x for x in lines if x.startswith("Overall"))
    assert ("· uncertain" in overall) == (o.uncertain_share >= UNCERTAIN_NOTE), overall
    # Voice on the same axis as the faces, spanning the whole clip.
    assert a.voice is not None and a.voice.speech_s > 0
    span = report._span(a)
    assert abs(span - a.info.duration) < 0.2, (span, a.info.duration)
    svgs = strips(html)
    assert len(svgs) == 2 + len(a.faces)  # room, voices, faces
    xs = [float(x) for x in re.findall(r"<rect x='([\d.]+)' y='\d+' width", svgs[1])]
    last_speech = max(r.t for r, _ in a.voice.timeline if r.speaking)
    assert max(xs) == pytest.approx(1000 * (last_speech - a.voice.hop_s) / span, abs=0.05)
    assert html.count("<div class='axis'>") == 3
    with (tmp_path / "h.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    # One row per face per analysed frame, plus rows of speech while no face was analysed.
    assert len([r for r in rows if r["face_id"]]) == sum(f.samples for f in a.faces)
    assert all(r["label"] == "" for r in rows if not r["face_id"])


@pytest.mark.integration
def test_no_faces_prints_no_expression_notes(
    config: Config, stages: Stages, tmp_path: Path
) -> None:
    a = analyze_file(VIDEO / "pyfeat_no_face.mp4", config, stages=stages)
    lines = report.summary_lines(a)
    report.write_html(a, tmp_path / "n.html")
    html = (tmp_path / "n.html").read_text("utf-8")
    print(lines)
    assert not a.faces
    assert not any("not feelings" in x or "contempt" in x for x in lines)
    assert "No faces found" in html and "not feelings" not in html


@pytest.mark.integration
def test_photo_report_is_an_overview_only(config: Config, stages: Stages, tmp_path: Path) -> None:
    a = analyze_file(MEDIA / "identities/faceapijs/bbt_group1.jpg", config, stages=stages)
    report.write_html(a, tmp_path / "p.html")
    html = (tmp_path / "p.html").read_text("utf-8")
    screenshot(tmp_path / "p.html", ARTIFACTS / "report-photo.png", 700)
    assert len(a.faces) == 4
    assert html.count("<div class='card'>") == 4 and "Over time" not in html
    assert "expression · confidence" in html


def print_pages(html_path: Path) -> list[str] | None:
    """The report printed to PDF by Chromium (A4, as a user prints it), as text per page."""
    if not Path(CHROMIUM).is_file() or not shutil.which("pdftotext"):
        return None
    pdf = html_path.with_suffix(".pdf")
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            html_path.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    shutil.copy(pdf, ARTIFACTS / f"{html_path.stem}.pdf")
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    return text.split("\f")


@pytest.mark.integration
def test_facial_actions_at_a_glance_and_printable(hamilton: Analysis, tmp_path: Path) -> None:
    """Facial actions as one faces x signals table (shaded by intensity) before the per-face
    timelines, not a screen of bars per face; on A4 the table is never cut across pages."""
    a = hamilton
    path = tmp_path / "report-hamilton-print.html"
    report.write_html(a, path)
    html = path.read_text("utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot(path, ARTIFACTS / "report-hamilton-actions.png", 2600)
    assert a.actions, "facial actions are on by default"
    tables = re.findall(r"<table class='heat'>.*?</table>", html)
    assert len(tables) == 1
    heat = tables[0]
    rows = re.findall(r"<tr><td>(.*?)</td><td>(\d+)</td>(.*?)</tr>", heat)
    names = {f.number: f.name for f in a.faces}
    assert [r[0] for r in rows] == [names[n] for n in sorted(a.actions)]
    for _, _, cells in rows:  # one shaded cell per AU-named signal, its value printed
        values = re.findall(
            r"<td style='background:rgba\(26,115,232,([\d.]+)\);[^']*'>([\d.]+)<", cells
        )
        assert len(values) == len(AU_NAMES)
        for alpha, v in values:
            assert float(alpha) == pytest.approx(min(1.0, float(v) / 0.6), abs=0.02)  # v rounded
    assert html.index("<h2>Facial actions</h2>") < html.index("<h2>Faces</h2>")
    assert "display:inline-block;height:8px" not in html  # the old bar list per face
    lines_before = html[: html.index("<h2>Faces</h2>")].count("<tr>")
    print(f"facial actions: {len(rows)} faces x {len(AU_NAMES)} signals in one table; "
          f"{lines_before} table rows before the timelines")  # fmt: skip
    pages = print_pages(path)
    if pages is None:
        pytest.skip("Chromium or pdftotext (poppler-utils) missing: print not checked")
    print(f"printed: {len(pages)} A4 page(s)")
    on = [i for i, p in enumerate(pages) if "highest peak" in p]
    assert len(on) == 1, "the table's head is printed once"
    page = pages[on[0]]
    assert all(re.search(rf"^\s*{re.escape(r[0])}\s+{r[1]}\s", page, re.M) for r in rows), page
    assert "Facial actions" in page  # the heading stays with its table
