"""Outputs of `analyze`: terminal summary, JSON, per-face timeline CSV and an HTML report."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

from stream.analysis import speakers_report
from stream.analysis.aggregate import FaceSummary, TimelinePoint
from stream.analysis.behaviour import ROW_FIELDS
from stream.analysis.summary import Analysis
from stream.core.labels import LABELS, UNCERTAIN
from stream.core.notices import EXPRESSIONS_NOT_FEELINGS, VOICE_NOTICE, face_name
from stream.vision.blendshapes import AU_NAMES, AU_NOTES, NOT_MAPPED

#: One colour per label, shared by every plot.
COLOURS: dict[str, str] = {
    "neutral": "#9e9e9e",
    "happiness": "#f4b400",
    "sadness": "#4285f4",
    "surprise": "#ab47bc",
    "fear": "#00897b",
    "disgust": "#7cb342",
    "anger": "#db4437",
    "contempt": "#8d6e63",
    UNCERTAIN: "#d3d6da",
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def summary_lines(a: Analysis) -> list[str]:
    """The terminal summary, one face per line, then the overall line."""
    info = a.info
    lines = []
    if info.kind == "video":
        speed = info.duration / a.wall_s if a.wall_s > 0 else 0.0
        lines.append(
            f"{info.path.name}: {info.duration:.1f} s, {info.width}x{info.height} {info.codec}, "
            f"{a.frames} frames analysed at {a.fps:g} fps in {a.wall_s:.1f} s "
            f"({speed:.1f}x real time)"
        )
    elif info.kind == "live":
        lines.append(f"{info.path.name}: {info.duration:.1f} s, {a.frames} frames analysed")
    elif info.kind == "audio":
        lines.append(speakers_report.header_line(a) or info.path.name)
    else:
        lines.append(f"{info.path.name}: image {info.width}x{info.height}")
    width = max((len(f.name) for f in a.faces), default=6)
    notes = _identity_notes(a)
    for f in a.faces:
        if info.kind == "image":
            pts = a.timelines.get(f.number, [])
            conf = f"  confidence {_pct(pts[-1].sample.confidence)}" if pts else ""
            lines.append(f"{f.name:<{width}}  expression: {f.dominant}{conf}")
            continue
        lines.append(
            f"{f.name:<{width}}  dominant: {f.headline(1)}"
            f"  visible {f.visible_s:.1f} s{_runner_up(f)}"
            + (f"  [{notes[f.number]}]" if f.number in notes else "")
        )
    o = a.overall
    if a.faces:
        lines.append(
            f"Overall  dominant: {o.headline(1)} of "
            f"{o.person_seconds:.1f} person-seconds across {o.faces} face(s)"
            if info.kind == "video"
            else f"Overall  dominant: {o.dominant} across {o.faces} face(s)"
        )
    if a.voice is not None:
        lines += voice_lines(a)
    lines += speakers_report.speaker_lines(a) + speakers_report.action_lines(a)
    if a.faces:  # the notes are about expressions: none were shown when no face was found
        if "contempt" not in a.supported:
            lines.append("Note: contempt is not supported by the configured expression models.")
        lines.append(EXPRESSIONS_NOT_FEELINGS)
    return lines


def voice_lines(a: Analysis) -> list[str]:
    """Who spoke and how: one line per speaking face, plus unattributed speech."""
    v = a.voice
    if v is None:
        return []
    if v.speech_s == 0:
        return ["Voice: no speech detected"]
    names = {f.number: f.name for f in a.faces}
    out = [
        f"Voice: {v.speech_s:.1f} s of speech"
        + (f", {v.unattributed_s:.1f} s not matched to a visible face" if v.unattributed_s else "")
        + (" (denoised)" if v.denoised else "")
    ]
    width = max((len(n) for n in names.values()), default=6)
    for sp in v.speakers:
        parts = [f"speaking {sp.speaking_s:.1f} s ({_pct(sp.share)})", *sp.prosody_parts()]
        name = names.get(sp.number) or face_name(sp.number)
        out.append(f"{name:<{width}}  " + "  ".join(parts))
    return out


def _runner_up(f: FaceSummary) -> str:
    others = sorted(
        ((k, v) for k, v in f.shares.items() if k not in (f.dominant, UNCERTAIN) and v > 0.05),
        key=lambda kv: -kv[1],
    )[:2]
    return "  (then " + ", ".join(f"{k} {_pct(v)}" for k, v in others) + ")" if others else ""


def write_json(a: Analysis, path: Path) -> None:
    """Write the summary as JSON (schema `emotion-stream.analysis` v1)."""
    path.write_bytes(json_text(a).encode("utf-8", errors="replace"))


def json_text(a: Analysis) -> str:
    """The summary as JSON text (schema `emotion-stream.analysis` v1)."""
    return json.dumps(a.to_dict(), indent=2) + "\n"


CSV_FIELDS = [
    "time_s",
    "face_id",
    "face_name",
    "label",
    "confidence",
    *[f"p_{lab}" for lab in LABELS],
    "valence_estimated",
    "arousal_estimated",
    "box_x1",
    "box_y1",
    "box_x2",
    "box_y2",
    "speaking",
    "pitch_hz",
    "energy_dbfs",
    "speaking_rate_per_s",
    "vocal_arousal_heuristic",
]


#: Behaviour columns (behaviour.enabled): head pose and gaze in degrees, attention 0..1, lean
#: -1..1 (+ toward the camera), posture flags 1/0; empty where not measured or not visible.
BEHAVIOUR_CSV_FIELDS = list(ROW_FIELDS)


def _behaviour_cells(a: Analysis, number: int, t: float) -> dict[str, object]:
    fb = a.behaviour.faces.get(number) if a.behaviour is not None else None
    row = fb.row_at(t + 1e-6) if fb is not None else None
    if row is None:
        return {}
    out: dict[str, object] = {}
    for k, v in row.items():
        if math.isfinite(v):
            out[k] = f"{v:.2f}" if k in ("attention", "lean") else f"{v:.1f}"
            if k in ("posture_visible", "shoulders_raised", "hand_to_face"):
                out[k] = str(int(v))
    return out


def write_csv(a: Analysis, path: Path) -> None:
    """Write the per-face timeline (see `csv_text`)."""
    path.write_bytes(csv_text(a).encode("utf-8", errors="replace"))


def csv_text(a: Analysis) -> str:
    """The per-face timeline: one row per face per analysed frame, smoothed values.

    Probabilities of labels the models do not support are left empty. Boxes are normalised
    to [0, 1] of the frame size.
    """
    supported = set(a.supported)
    rows = []
    for f in a.faces:
        for p in a.timelines.get(f.number, []):
            s = p.sample
            row: dict[str, object] = {
                "time_s": f"{p.t:.3f}",
                "face_id": f.number,
                "face_name": f.name,
                "label": s.label,
                "confidence": f"{s.confidence:.4f}",
                "valence_estimated": f"{s.valence_arousal[0]:.4f}",
                "arousal_estimated": f"{s.valence_arousal[1]:.4f}",
            }
            for i, lab in enumerate(LABELS):
                row[f"p_{lab}"] = f"{s.probs[i]:.4f}" if lab in supported else ""
            for k, v in zip(("box_x1", "box_y1", "box_x2", "box_y2"), s.box, strict=True):
                row[k] = f"{v:.4f}"
            row.update(_voice_cells(a, f.number, p.t))
            row.update(speakers_report.csv_cells(a, f.number, p.t))
            row.update(_behaviour_cells(a, f.number, p.t))
            rows.append(row)
    rows += speakers_report.speaker_rows(a)
    rows.sort(key=lambda r: (float(str(r["time_s"])), int(str(r["face_id"]) or 0)))
    # Keep column names honest when a model regresses valence/arousal.
    fields = [
        f.replace("_estimated", "") if a.va_estimated is False and f.endswith("_estimated") else f
        for f in [*CSV_FIELDS, *speakers_report.CSV_FIELDS, *BEHAVIOUR_CSV_FIELDS]
    ]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(fields)
    keys = [*CSV_FIELDS, *speakers_report.CSV_FIELDS, *BEHAVIOUR_CSV_FIELDS]
    w.writerows([[row.get(k, "") for k in keys] for row in rows])
    return buf.getvalue()


def _voice_cells(a: Analysis, number: int, t: float) -> dict[str, object]:
    """Prosody columns for a face at time t: filled while it is the matched active speaker."""
    hit = a.voice.at(t) if a.voice is not None else None
    if hit is None:
        return {}
    report, active = hit
    if not (report.speaking and active.face == number):
        return {"speaking": "false"}

    def fmt(x: float | None, n: int) -> str:
        return "" if x is None else f"{x:.{n}f}"

    return {
        "speaking": "true",
        "pitch_hz": fmt(report.f0_median_hz, 1),
        "energy_dbfs": fmt(report.energy_dbfs, 1),
        "speaking_rate_per_s": fmt(report.rate_per_s, 2),
        "vocal_arousal_heuristic": fmt(report.vocal_arousal_heuristic, 2),
    }


# -- HTML report ---------------------------------------------------------------------------------
# Hand-written SVG on one shared time axis (0 to the end of the media): every strip of every face,
# the room's expression over time and the voice lanes line up, for 1 face or 30. No scripts, no
# external files; prints on A4 (rows are not split across pages).

_W = 1000.0  # SVG user units across the time axis (stretched to the column width)
_VA_COLOURS = ("#1a73e8", "#e8710a")  # valence, arousal


def _span(a: Analysis) -> float:
    """The end of the shared time axis: the media's duration, or the last thing seen in it."""
    end = a.info.duration
    for pts in a.timelines.values():
        if pts:
            end = max(end, pts[-1].t + pts[-1].dt)
    if a.voice is not None and a.voice.timeline:
        end = max(end, a.voice.timeline[-1][0].t)
    return max(end, 1e-3)


def _x(t: float, span: float) -> float:
    return min(max(t / span, 0.0), 1.0) * _W


def _svg_open(height: int, label: str) -> str:
    return (
        f"<svg class='strip' viewBox='0 0 {_W:g} {height}' preserveAspectRatio='none' "
        f"style='height:{height}px' role='img' aria-label='{html.escape(label)}'>"
    )


def _segments(pts: list[TimelinePoint]) -> list[list[TimelinePoint]]:
    """Runs of consecutive analysed frames (a face's gaps split them)."""
    runs: list[list[TimelinePoint]] = []
    for prev, p in zip([None, *pts[:-1]], pts, strict=True):
        if prev is None or p.t - (prev.t + prev.dt) > 1e-6:
            runs.append([])
        runs[-1].append(p)
    return runs


def _polyline(points: list[tuple[float, float]], colour: str, width: float = 1.5) -> str:
    if not points:
        return ""
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return (
        f"<polyline points='{pts}' fill='none' stroke='{colour}' stroke-width='{width}' "
        "vector-effect='non-scaling-stroke'/>"
    )


def _face_strips(a: Analysis, f: FaceSummary, span: float) -> str:
    """Expression strip, confidence and valence/arousal of one face on the shared axis."""
    pts = a.timelines.get(f.number, [])
    if not pts:
        return "<p class='meta'>No timeline kept for this face.</p>"
    strip = []
    for p in pts:  # one rect per analysed frame, widened a hair so neighbours never leave seams
        x0, x1 = _x(p.t, span), _x(p.t + p.dt, span)
        strip.append(
            f"<rect x='{x0:.2f}' y='0' width='{max(x1 - x0 + 0.3, 0.4):.2f}' height='14' "
            f"fill='{COLOURS[p.sample.label]}'/>"
        )
    conf, val, aro = [], [], []
    for run in _segments(pts):
        conf.append(
            _polyline([(_x(p.t, span), 40 - 22 * p.sample.confidence) for p in run], "#333")
        )
        val.append(
            _polyline(
                [(_x(p.t, span), 55 - 10 * p.sample.valence_arousal[0]) for p in run],
                _VA_COLOURS[0],
            )
        )
        aro.append(
            _polyline(
                [(_x(p.t, span), 55 - 10 * p.sample.valence_arousal[1]) for p in run],
                _VA_COLOURS[1],
            )
        )
    bands = (
        "<rect x='0' y='18' width='1000' height='22' fill='#f4f5f6'/>"
        "<rect x='0' y='44' width='1000' height='22' fill='#f4f5f6'/>"
        "<line x1='0' x2='1000' y1='55' y2='55' stroke='#ccc' vector-effect='non-scaling-stroke'/>"
    )
    lane, height = _attention_lane(a, f.number, span, 70)
    return (
        _svg_open(height, f"{f.name}: shown expression, confidence, valence and arousal over time")
        + bands
        + "".join(strip)
        + "".join(conf)
        + "".join(val)
        + "".join(aro)
        + lane
        + "</svg>"
    )


def _attention_lane(a: Analysis, number: int, span: float, y: float) -> tuple[str, int]:
    """A face's attention lane at `y` (darker: pointing toward the camera; grey: not seen),
    looking-away spans shaded, nods (down-triangles) and shakes (diamonds) at their start;
    returns the SVG and the strip's new height."""
    fb = a.behaviour.faces.get(number) if a.behaviour is not None else None
    if fb is None or not fb.rows:
        return "", 66
    out = [f"<rect x='0' y='{y}' width='1000' height='12' fill='#e6e6e6'/>"]
    rows = fb.rows
    for r, nxt in zip(rows, [*rows[1:], None], strict=True):
        dt = min((nxt[0] - r[0]) if nxt else 1.0 / a.fps, fb.max_gap_s)
        x0, x1 = _x(r[0], span), _x(r[0] + dt, span)
        att = r[ROW_FIELDS.index("attention") + 1]
        out.append(
            f"<rect x='{x0:.2f}' y='{y}' width='{max(x1 - x0 + 0.3, 0.4):.2f}' height='12' "
            f"fill='#2e7d32' fill-opacity='{0.15 + 0.75 * att:.2f}'/>"
        )
    for d in fb.drops:
        x0, x1 = _x(d.start, span), _x(d.end, span)
        out.append(
            f"<rect x='{x0:.2f}' y='{y - 1}' width='{max(x1 - x0, 0.5):.2f}' height='14' "
            "fill='#b71c1c' fill-opacity='0.35'><title>looking away "
            f"{d.end - d.start:.1f} s at {d.start:.1f} s</title></rect>"
        )
    for g in fb.gestures:
        x = _x(g.start, span)
        shape = (
            f"M{x - 4:.1f},{y + 13} L{x + 4:.1f},{y + 13} L{x:.1f},{y + 21} Z"
            if g.kind == "nod"
            else f"M{x:.1f},{y + 12} l4,4 l-4,4 l-4,-4 Z"
        )
        word = "nodding" if g.kind == "nod" else "head shake"
        out.append(
            f"<path d='{shape}' fill='#333'><title>{word} at {g.start:.1f} s, {g.swings} "
            f"swings, {g.strength:.0f}°</title></path>"
        )
    return "".join(out), 92


def behaviour_table(a: Analysis) -> str:
    """Per face: attention share, looking-away drops, nods, shakes, blink rate, posture shares
    (behaviour words only)."""
    if a.behaviour is None or not a.behaviour.faces:
        return ""
    esc = html.escape

    def pct(v: object) -> str:
        return "–" if v is None else f"{100 * float(str(v)):.0f}%"

    rows = []
    for f in a.faces:
        fb = a.behaviour.faces.get(f.number)
        if fb is None:
            continue
        d = fb.summary()
        blink = d["blink_rate_per_min"]
        rough = " (rough)" if d["blink_method"] == "occupancy" else ""
        rows.append(
            f"<tr><td>{esc(f.name)}</td><td>{pct(d['attention_share'])}</td>"
            f"<td>{d['looking_away_drops']} · {d['looking_away_s']} s</td>"
            f"<td>{d['nods']}</td><td>{d['shakes']}</td>"
            f"<td>{'–' if blink is None else f'{blink}/min{rough}'}</td>"
            f"<td>{pct(d['leaning_in_share'])}</td><td>{pct(d['hand_to_face_share'])}</td>"
            f"<td>{pct(d['posture_visible_share'])}</td></tr>"
        )
    return (
        "<section class='behaviour'><h2>Attention, head gestures and posture</h2>"
        "<p class='meta'>Behaviour, not states of mind: attention is the share of visible time "
        "the head and eyes pointed toward the camera; looking away counts the longer spans "
        "(behaviour.drop_min_s). In the timeline: the green lane is attention (grey: not "
        "seen), red spans are looking away, ▼ nods, ◆ head shakes.</p>"
        "<div class='scroll'><table><thead><tr><th>face</th><th>attention</th>"
        "<th>looking away</th><th>nods</th><th>shakes</th><th>blinks</th><th>leaning in</th>"
        "<th>hand to face</th><th>upper body seen</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _room_strip(a: Analysis, span: float) -> str:
    """The room over time: in each time bin, the share of visible faces showing each label."""
    bins = max(1, min(240, round(span * a.fps)))
    width = span / bins
    time_in = [dict.fromkeys(COLOURS, 0.0) for _ in range(bins)]
    for pts in a.timelines.values():
        for p in pts:
            t0, t1 = p.t, p.t + p.dt
            b = int(t0 / width)
            while b < bins and b * width < t1:
                overlap = min(t1, (b + 1) * width) - max(t0, b * width)
                if overlap > 0:
                    time_in[b][p.sample.label] += overlap
                b += 1
    order = [*[lab for lab in LABELS if lab in COLOURS], UNCERTAIN]
    rects, counts = [], []
    peak = max((sum(c.values()) / width for c in time_in), default=0.0)
    for b, cells in enumerate(time_in):
        total = sum(cells.values())
        x0, x1 = _x(b * width, span), _x((b + 1) * width, span)
        counts.append(((x0 + x1) / 2, 78 - 14 * (total / width) / max(peak, 1e-9)))
        y = 60.0
        for lab in order:  # uncertain on top, labels from the baseline up
            if cells[lab] <= 0:
                continue
            h = 60 * cells[lab] / total
            y -= h
            rects.append(
                f"<rect x='{x0:.2f}' y='{y:.2f}' width='{x1 - x0 + 0.3:.2f}' height='{h:.2f}' "
                f"fill='{COLOURS[lab]}'/>"
            )
    return (
        _svg_open(80, "share of visible faces showing each expression over time")
        + "".join(rects)
        + "<rect x='0' y='63' width='1000' height='16' fill='#f4f5f6'/>"
        + _polyline(counts, "#555")
        + "</svg>"
        + f"<div class='legend meta'>bars: share of the faces visible at that time showing each "
        f"expression (grey: uncertain) · line: faces visible (peak {peak:.1f})</div>"
    )


def _voice_strips(a: Analysis, span: float) -> tuple[str, list[str]]:
    """Who speaks when (one lane per face, plus speech no face matched) and pitch."""
    assert a.voice is not None
    names = {f.number: f.name for f in a.faces}
    lanes: list[int | None] = [*sorted({s.number for s in a.voice.speakers}), None]
    lane_h, hop = 12, a.voice.hop_s
    h = lane_h * len(lanes)
    rects, pitch = [], []
    f0s = [r.f0_median_hz for r, _ in a.voice.timeline if r.speaking and r.f0_median_hz]
    lo, hi = (min(f0s), max(f0s)) if f0s else (80.0, 300.0)
    hi = max(hi, lo + 20)
    for r, act in a.voice.timeline:
        if not r.speaking:
            continue
        i = lanes.index(act.face) if act.face in lanes else len(lanes) - 1
        colour = "#9e9e9e" if act.face is None else "#3c4043"  # not expression colours
        x0, x1 = _x(r.t - hop, span), _x(r.t, span)
        rects.append(
            f"<rect x='{x0:.2f}' y='{i * lane_h + 1}' width='{x1 - x0 + 0.3:.2f}' "
            f"height='{lane_h - 2}' fill='{colour}'/>"
        )
        if r.f0_median_hz:
            y = h + 4 + 36 * (1 - (r.f0_median_hz - lo) / (hi - lo))
            pitch.append(
                f"<rect x='{x0:.2f}' y='{y - 1:.1f}' width='{x1 - x0 + 0.3:.2f}' height='2.5' "
                f"fill='{colour}'/>"
            )
    labels = "".join(
        f"<div style='height:{lane_h}px'>"
        f"{html.escape(names.get(n) or face_name(n) if n is not None else 'not visible')}</div>"
        for n in lanes
    )
    svg = (
        _svg_open(h + 44, "who speaks when, and pitch")
        + f"<rect x='0' y='{h + 2}' width='1000' height='40' fill='#f4f5f6'/>"
        + "".join(rects)
        + "".join(pitch)
        + "</svg>"
    )
    side = (
        f"<div class='lanes'>{labels}<div class='meta' style='height:40px;padding-top:4px'>"
        f"pitch {lo:.0f}–{hi:.0f} Hz</div></div>"
    )
    return svg, [side]


def _axis(span: float) -> str:
    """Tick labels of the shared time axis (HTML, so the text is not stretched)."""
    step = next(
        s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 1e9) if span / s <= 10
    )
    ticks = []
    t = 0.0
    while t <= span + 1e-9:
        label = f"{t:g} s" if span < 120 else f"{int(t // 60)}:{int(t % 60):02d}"
        ticks.append(f"<span style='left:{100 * t / span:.3f}%'>{label}</span>")
        t += step
    return f"<div class='axis'>{''.join(ticks)}</div>"


def _share_bar(shares: dict[str, float]) -> str:
    """One stacked bar of label shares (largest first, uncertain last)."""
    items = sorted(
        ((k, v) for k, v in shares.items() if v > 0 and k != UNCERTAIN), key=lambda kv: -kv[1]
    )
    if shares.get(UNCERTAIN, 0) > 0:
        items.append((UNCERTAIN, shares[UNCERTAIN]))
    cells = "".join(
        f"<span style='width:{100 * v:.2f}%;background:{COLOURS[k]}' title='{k} {_pct(v)}'></span>"
        for k, v in items
    )
    return f"<div class='sharebar'>{cells}</div>"


def _legend(shares: dict[str, float] | None = None) -> str:
    labs = [lab for lab in (*LABELS, UNCERTAIN) if lab in COLOURS]
    if shares is not None:
        labs = sorted((k for k in labs if shares.get(k, 0) > 0), key=lambda k: -shares[k])
    return (
        "<div class='legend'>"
        + "".join(
            f"<span><i style='background:{COLOURS[k]}'></i>{k}"
            + (f" {_pct(shares[k])}" if shares is not None else "")
            + "</span>"
            for k in labs
        )
        + "</div>"
    )


def _thumb(a: Analysis, f: FaceSummary, cls: str = "") -> str:
    thumb = a.thumbnails.get(f.number, b"")
    if not thumb:
        return f"<div class='thumb {cls}'></div>"
    return (
        f"<img class='thumb {cls}' alt='{html.escape(f.name)}' "
        f"src='data:image/jpeg;base64,{base64.b64encode(thumb).decode()}'>"
    )


_CSS = """
*{box-sizing:border-box}body{font:14px/1.4 system-ui,sans-serif;margin:1.2rem auto;
max-width:1200px;padding:0 1rem;color:#202124;-webkit-print-color-adjust:exact;
print-color-adjust:exact}h1{font-size:1.35rem;margin:.2rem 0}h2{font-size:1.1rem;
margin:1.4rem 0 .4rem}.meta{color:#5f6368;font-size:.85rem}.notice{background:#fff8e1;
border-left:4px solid #f4b400;padding:.4rem .8rem;font-size:.85rem;margin:.5rem 0}
.err{color:#b00020}.room{display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap}
.room .big{font-size:1.35rem;font-weight:600}.sharebar{display:flex;height:12px;border-radius:3px;
overflow:hidden;background:#eee;min-width:120px}.sharebar span{display:block;height:100%}
.room .sharebar{flex:1 1 360px;height:18px}.legend{display:flex;flex-wrap:wrap;gap:.2rem .8rem;
font-size:.8rem;color:#5f6368}.legend i{display:inline-block;width:.8em;height:.8em;
margin-right:.25em;border-radius:2px;vertical-align:-1px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(175px,1fr));gap:.4rem}
.card{display:flex;gap:.5rem;border:1px solid #dadce0;border-radius:8px;padding:.35rem;
break-inside:avoid}.card .thumb{width:56px;height:56px;border-radius:6px;object-fit:cover;
flex:none;background:#eee}.card .name{font-weight:600}.card .dom{font-size:.95rem}
.card .sharebar{height:6px;margin-top:.2rem}.card .meta{font-size:.75rem;line-height:1.2}
.card .name{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.card>div{min-width:0;flex:1}
.tl{display:grid;grid-template-columns:150px 1fr;column-gap:.6rem;align-items:start}
.tl>.who{display:flex;gap:.4rem;align-items:flex-start;font-size:.8rem;line-height:1.25;
overflow:hidden}.tl>.who .thumb{width:32px;height:32px;border-radius:4px;object-fit:cover;
flex:none}.tl>.who b{display:block;font-size:.85rem}.row{display:contents}
.tl>*{break-inside:avoid}.strip{display:block;width:100%;margin:.3rem 0}
.axis{position:relative;height:1.1rem;font-size:.72rem;color:#5f6368;border-top:1px solid #bbb}
.axis span{position:absolute;transform:translateX(-50%);white-space:nowrap}
.axis span:first-child{transform:none}.lanes{font-size:.75rem;line-height:1;margin-top:.3rem}
.tl>.who{margin-top:.3rem;height:66px}
.lanes div{overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
table{border-collapse:collapse;font-size:.8rem}td,th{padding:2px 7px;text-align:right;
border-bottom:1px solid #eee}th:first-child,td:first-child{text-align:left}
.note{color:#8a5300;font-size:.72rem;line-height:1.2;display:block}
.tl>.who.noted{height:auto;min-height:66px}
.scroll{overflow-x:auto;max-width:100%}
.heat td{min-width:3.2em;font-variant-numeric:tabular-nums;border:1px solid #fff}
.heat td.peak{color:#5f6368;white-space:nowrap}
.heat th.v{vertical-align:bottom;text-align:center;font-weight:500;line-height:1.1;
max-width:6.5em}.heat th.v small{color:#5f6368}.heat td:first-child{white-space:nowrap;
max-width:14em;overflow:hidden;text-overflow:ellipsis}.heat tr{break-inside:avoid}
.key{font-size:.72rem;margin:.3rem 0}
@media print{@page{size:A4;margin:12mm}body{margin:0;max-width:none;font-size:10px;
padding:0}h2{break-after:avoid}.grid{grid-template-columns:repeat(4,1fr)}
.scroll{overflow:visible}table{width:100%;font-size:9px}td,th{padding:1px 3px}
.heat td{min-width:0}tr,.card,.tl>*{break-inside:avoid}thead{display:table-header-group}
section.speakers,.tl>.who+div{break-inside:avoid}h2,.legend{break-after:avoid}
.tl .note{display:none}
.tl{grid-template-columns:110px 1fr}}
"""


def _identity_notes(a: Analysis) -> dict[int, str]:
    """Why each sub-second face stays a face of its own: whole-file consolidation's note, or
    what is known when it has none."""
    faces = (a.identity or {}).get("faces", [])
    out = {int(f["id"]): str(f["note"]) for f in faces if isinstance(f, dict) and f.get("note")}
    if a.info.kind == "image":
        return out
    for f in a.faces:
        if f.visible_s < 1.0 and f.number not in out:
            out[f.number] = (
                "brief, kept apart: no other face matched it in appearance"
                if a.identity and a.identity.get("consolidated")
                else "brief: identities not consolidated (live, or tracking.consolidate off)"
            )
    return out


def _au_label(au: str) -> tuple[str, str]:
    """("AU12", "smile") from "AU12_smile"."""
    code, _, name = au.partition("_")
    return code, name.replace("_", " ")


def _heat_cell(v: float) -> str:
    """A table cell shaded by intensity (0..1; full colour from 0.6 up), its value printed."""
    alpha = min(1.0, max(v, 0.0) / 0.6)
    ink = "#fff" if alpha > 0.55 else "#202124"
    return f"<td style='background:rgba(26,115,232,{alpha:.2f});color:{ink}'>{v:.2f}</td>"


def actions_heatmap(a: Analysis) -> str:
    """Facial actions at a glance: one row per face, one column per AU-named signal, each cell
    the face's mean intensity (shaded), with what the names mean and how far to trust them."""
    if not a.actions:
        return ""
    esc = html.escape
    names = {f.number: f.name for f in a.faces}
    weak = {au for au, note in AU_NOTES.items() if "weak" in note or "not measured" in note}
    head = "".join(
        f"<th class='v' title='{esc(AU_NOTES[au])}'><span>{esc(_au_label(au)[1])}"
        f"{' *' if au in weak else ''}<br><small>{esc(_au_label(au)[0])}</small></span></th>"
        for au in AU_NAMES
    )
    rows = []
    for n, st in sorted(a.actions.items()):
        d = st.to_dict(False)
        mean, peak = d["mean"], d["peak"]
        assert isinstance(mean, dict) and isinstance(peak, dict)
        cells = "".join(_heat_cell(float(mean.get(au, 0.0))) for au in AU_NAMES)
        top = max(AU_NAMES, key=lambda au: float(peak.get(au, 0.0)))
        rows.append(
            f"<tr><td>{esc(names.get(n) or face_name(n))}</td><td>{d['samples']}</td>{cells}"
            f"<td class='peak'>{esc(_au_label(top)[1])} {float(peak.get(top, 0.0)):.2f}</td></tr>"
        )
    key = "; ".join(f"{_au_label(au)[0]} {_au_label(au)[1]}: {AU_NOTES[au]}" for au in AU_NAMES)
    missing = "; ".join(f"{k}: {v}" for k, v in NOT_MAPPED.items())
    return (
        "<section class='actions'><h2>Facial actions</h2><p class='meta'>Mean intensity "
        "(0–1, darker is stronger) of MediaPipe blendshapes under approximate AU names, per "
        "face: facial actions, not emotions. * weak or unvalidated mapping.</p>"
        "<div class='scroll'><table class='heat'><thead><tr><th>face</th><th>samples</th>"
        f"{head}<th>highest peak</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        f"<p class='meta key'>{esc(key)}. Not offered: {esc(missing)}.</p></section>"
    )


def _face_card(a: Analysis, f: FaceSummary) -> str:
    esc = html.escape
    if a.info.kind == "image":
        pts = a.timelines.get(f.number, [])
        conf = f" · confidence {_pct(pts[-1].sample.confidence)}" if pts else ""
        detail = f"expression{conf}"
        dom = esc(f.dominant)
    else:
        dom = f"{esc(f.dominant)} {100 * f.dominant_share:.0f}%"
        detail = f"uncertain {100 * f.uncertain_share:.0f}% · {f.visible_s:.1f} s visible"
        note = _identity_notes(a).get(f.number)
        if note:
            detail += f"<br><span class='note'>{esc(note)}</span>"
    return (
        f"<div class='card'>{_thumb(a, f)}<div><div class='name'>{esc(f.name)}</div>"
        f"<div class='dom'>{dom}</div><div class='meta'>{detail}</div>"
        f"{_share_bar(f.shares) if a.info.kind != 'image' else ''}</div></div>"
    )


def write_html(a: Analysis, path: Path) -> None:
    """Write a self-contained HTML report: overview first, then everything on one time axis."""
    path.write_bytes(render_html(a).encode("utf-8", errors="replace"))


def render_html(a: Analysis) -> str:
    """The HTML report as a string (also served live)."""
    esc = html.escape
    va_how = (
        "estimated from expression probabilities (circumplex table), not measured"
        if a.va_estimated
        else "regressed by the model"
    )
    o = a.overall
    video = a.info.kind != "image"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>emotion-stream: {esc(a.info.path.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Expression report: {esc(a.info.path.name)}</h1>",
        f"<p class='meta'>{esc(summary_lines(a)[0])}</p>",
    ]
    if a.error:
        parts.append(f"<p class='err'>Incomplete: {esc(a.error)}</p>")
    if not a.faces:
        parts.append(speakers_report.speakers_html(a, _span(a)))
        parts.append("<h2>No faces found</h2></body></html>")
        return "".join(parts)
    parts.append(
        f"<p class='notice'>{esc(EXPRESSIONS_NOT_FEELINGS)} Valence/arousal are {va_how}. "
        "Contempt is "
        f"{'supported' if 'contempt' in a.supported else 'not supported'} by the configured "
        "models. <i>Uncertain</i>: no expression clearly led.</p>"
    )
    # -- overview: the room, then every face, on one screen for a crowd
    if video:
        parts.append(
            "<div class='room'><div><div class='meta'>Room overall</div>"
            f"<div class='big'>{esc(o.headline())}</div><div class='meta'>{o.faces} face(s), "
            f"{o.person_seconds:.1f} person-seconds</div></div>{_share_bar(o.shares)}</div>"
            + _legend(o.shares)
        )
    parts.append(
        "<div class='grid' style='margin-top:.6rem'>"
        + "".join(_face_card(a, f) for f in a.faces)
        + "</div>"
    )
    if not video:
        parts.append("</body></html>")
        return "".join(parts)
    span = _span(a)
    axis = f"<div></div>{_axis(span)}"
    parts.append(
        f"<h2>Over time</h2><div class='tl'><div class='who' style='height:auto'><div><b>Room</b>"
        f"{o.faces} face(s) over time</div></div><div>{_room_strip(a, span)}</div>{axis}</div>"
    )
    if a.voice is not None and a.voice.speech_s > 0:
        svg, side = _voice_strips(a, span)
        parts.append(
            "<h2>Voices</h2><div class='tl'>"
            + "".join(side)
            + f"<div>{svg}<div class='meta'>"
            + "<br>".join(esc(x) for x in voice_lines(a))
            + f"</div><div class='meta'>{esc(VOICE_NOTICE)}</div></div>{axis}</div>"
        )
    parts.append(speakers_report.speakers_html(a, span) + actions_heatmap(a) + behaviour_table(a))
    parts.append(
        "<h2>Faces</h2>"
        + _legend()
        + "<div class='meta'>Each face: shown expression (colour; gaps: not visible), "
        "confidence (dark line, 0–100%), "
        f"<span style='color:{_VA_COLOURS[0]}'>valence</span> and "
        f"<span style='color:{_VA_COLOURS[1]}'>arousal</span> "
        f"({'estimated, ' if a.va_estimated else ''}−1 to +1).</div><div class='tl'>"
    )
    notes = _identity_notes(a)
    for f in a.faces:
        note = f"<br><span class='note'>{esc(notes[f.number])}</span>" if f.number in notes else ""
        parts.append(
            f"<div class='who{' noted' if note else ''}'>{_thumb(a, f)}<div><b>{esc(f.name)}</b>"
            f"{esc(f.headline())}"
            f"<br><span class='meta'>visible {f.visible_s:.1f} s</span>{note}</div></div>"
            f"<div>{_face_strips(a, f, span)}</div>"
        )
    parts.append(f"{axis}</div>")
    # -- details: every number in one table
    d = a.to_dict()
    labs = [lab for lab in (*LABELS, UNCERTAIN) if any(f.shares.get(lab, 0) > 0 for f in a.faces)]
    head = "".join(f"<th>{esc(lab)}</th>" for lab in labs)
    rows = "".join(
        f"<tr><td>{esc(f.name)}</td><td>{f.visible_s:.1f}</td>"
        + "".join(f"<td>{_pct(f.shares.get(lab, 0.0))}</td>" for lab in labs)
        + f"<td>{fd['valence_arousal']['valence']:+.2f}</td>"
        f"<td>{fd['valence_arousal']['arousal']:+.2f}</td></tr>"
        for f, fd in zip(a.faces, d["faces"], strict=True)
    )
    est = " (est.)" if a.va_estimated else ""
    parts.append(
        "<h2>Details: share of visible time</h2><table><tr><th>face</th><th>visible s</th>"
        f"{head}<th>valence{est}</th><th>arousal{est}</th></tr>{rows}</table></body></html>"
    )
    return "".join(parts)


#: Report formats by file suffix: (renderer, content type). One writer for `analyze` and live.
FORMATS = {
    "json": (json_text, "application/json"),
    "csv": (csv_text, "text/csv"),
    "html": (render_html, "text/html"),
}


def write_reports(a: Analysis, folder: Path, stem: str) -> list[Path]:
    """Write the JSON, CSV and HTML reports as `folder/stem.{json,csv,html}`."""
    folder.mkdir(parents=True, exist_ok=True)
    # Everything rendered and encoded before the first file is opened: no 0-byte files.
    bodies = {s: r(a).encode("utf-8", errors="replace") for s, (r, _) in FORMATS.items()}
    out = []
    for suffix, body in bodies.items():
        path = folder / f"{stem}.{suffix}"
        path.write_bytes(body)
        out.append(path)
    return out
