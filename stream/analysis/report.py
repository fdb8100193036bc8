"""Outputs of `analyze`: terminal summary, JSON, per-face timeline CSV and an HTML report."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

from stream.analysis.aggregate import FaceSummary
from stream.analysis.summary import Analysis
from stream.core.labels import LABELS, UNCERTAIN
from stream.core.notices import EXPRESSIONS_NOT_FEELINGS as NOTICE
from stream.core.notices import face_name

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
    UNCERTAIN: "#e0e0e0",
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
    else:
        lines.append(f"{info.path.name}: image {info.width}x{info.height}")
    width = max((len(f.name) for f in a.faces), default=6)
    for f in a.faces:
        if info.kind == "image":
            pts = a.timelines.get(f.number, [])
            conf = f"  confidence {_pct(pts[-1].sample.confidence)}" if pts else ""
            lines.append(f"{f.name:<{width}}  expression: {f.dominant}{conf}")
            continue
        lines.append(
            f"{f.name:<{width}}  dominant: {f.dominant} {_pct(f.dominant_share)}"
            f"  visible {f.visible_s:.1f} s{_runner_up(f)}"
        )
    o = a.overall
    if a.faces:
        lines.append(
            f"Overall  dominant: {o.dominant} {_pct(o.dominant_share)} of "
            f"{o.person_seconds:.1f} person-seconds across {o.faces} face(s)"
            if info.kind == "video"
            else f"Overall  dominant: {o.dominant} across {o.faces} face(s)"
        )
    if a.voice is not None:
        lines += voice_lines(a)
    if "contempt" not in a.supported:
        lines.append("Note: contempt is not supported by the configured expression models.")
    lines.append(NOTICE)
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
        parts = [f"speaking {sp.speaking_s:.1f} s ({_pct(sp.share)})"]
        if sp.f0_median_hz is not None:
            parts.append(f"pitch {sp.f0_median_hz:.0f} Hz")
        if sp.energy_dbfs is not None:
            parts.append(f"energy {sp.energy_dbfs:.0f} dBFS")
        if sp.rate_per_s is not None:
            parts.append(f"rate {sp.rate_per_s:.1f}/s")
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
    path.write_text(json.dumps(a.to_dict(), indent=2) + "\n", encoding="utf-8")


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


def write_csv(a: Analysis, path: Path) -> None:
    """Write the per-face timeline: one row per face per analysed frame, smoothed values.

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
            rows.append(row)
    rows.sort(key=lambda r: (float(str(r["time_s"])), int(str(r["face_id"]))))
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    if a.va_estimated is False:  # keep column names honest when a model regresses V/A
        text = path.read_text(encoding="utf-8").replace("valence_estimated", "valence", 1)
        path.write_text(text.replace("arousal_estimated", "arousal", 1), encoding="utf-8")


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


def _svg(fig: object) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _timeline_svg(a: Analysis, f: FaceSummary) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pts = a.timelines.get(f.number, [])
    fig, (ax, lane) = plt.subplots(
        2, 1, figsize=(8.5, 2.6), sharex=True, gridspec_kw={"height_ratios": [4, 1]}
    )
    if pts:
        # Break the lines where the face was not visible instead of drawing across the gap.
        ts: list[float] = []
        rows: list[np.ndarray] = []
        for prev, p in zip([None, *pts[:-1]], pts, strict=True):
            if prev is not None and p.t - prev.t > prev.dt + 1e-6:
                ts.append(prev.t + prev.dt)
                rows.append(np.full(8, np.nan, np.float32))
            ts.append(p.t)
            rows.append(p.sample.probs)
        t = np.array(ts)
        probs = np.stack(rows)
        for i, lab in enumerate(LABELS):
            if lab in a.supported:
                ax.plot(t, probs[:, i], color=COLOURS[lab], lw=1.6, label=lab)
        for p in pts:
            lane.axvspan(p.t, p.t + p.dt, color=COLOURS[p.sample.label], lw=0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.grid(alpha=0.3)
    ax.legend(ncol=4, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    lane.set_yticks([])
    lane.set_ylabel("shown", rotation=0, ha="right", va="center")
    lane.set_xlabel("time (s)")
    return _svg(fig)


def _voice_svg(a: Analysis) -> str:
    """Who speaks when (one lane per face, plus speech no face matched) and their pitch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert a.voice is not None
    names = {f.number: f.name for f in a.faces}
    lanes = [*sorted({s.number for s in a.voice.speakers}), None]
    fig, (who, pitch) = plt.subplots(
        2,
        1,
        figsize=(8.5, 1.2 + 0.35 * len(lanes)),
        sharex=True,
        gridspec_kw={"height_ratios": [len(lanes), 3]},
    )
    hop = a.voice.hop_s
    for r, act in a.voice.timeline:
        if not r.speaking:
            continue
        lane = lanes.index(act.face) if act.face in lanes else len(lanes) - 1
        colour = "#9e9e9e" if act.face is None else f"C{lane % 10}"
        who.axvspan(
            r.t - hop, r.t, ymin=lane / len(lanes), ymax=(lane + 1) / len(lanes), color=colour, lw=0
        )
        if r.f0_median_hz is not None and act.face is not None:
            pitch.plot(r.t, r.f0_median_hz, "o", ms=2.5, color=colour)
    who.set_yticks([(i + 0.5) / len(lanes) for i in range(len(lanes))])
    who.set_yticklabels(
        [names.get(n) or face_name(n) if n is not None else "not visible" for n in lanes],
        fontsize=8,
    )
    who.set_ylim(0, 1)
    pitch.set_ylabel("pitch (Hz)")
    pitch.set_xlabel("time (s)")
    pitch.grid(alpha=0.3)
    return _svg(fig)


def _shares_svg(shares: dict[str, float]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(k, v) for k, v in shares.items() if v > 0]
    items.sort(key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(4.2, 0.3 * max(len(items), 1) + 0.5))
    ax.barh(
        [k for k, _ in items], [100 * v for _, v in items], color=[COLOURS[k] for k, _ in items]
    )
    for i, (_, v) in enumerate(items):
        ax.text(100 * v + 1, i, _pct(v), va="center", fontsize=8)
    ax.set_xlim(0, 115)
    ax.set_xlabel("% of visible time")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.5rem}.meta{color:#555}.notice{background:#fff8e1;border-left:4px solid #f4b400;
padding:.6rem 1rem}.face{border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}
.face header{display:flex;gap:1rem;align-items:center}.face img{width:96px;height:96px;
border-radius:6px}.dominant{font-size:1.2rem}.row{display:flex;flex-wrap:wrap;gap:1rem;
align-items:flex-start}svg{max-width:100%;height:auto}table{border-collapse:collapse}
td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}.err{color:#b00020}
"""


def write_html(a: Analysis, path: Path) -> None:
    """Write a self-contained HTML report with per-face timelines and dominant-expression bars."""
    esc = html.escape
    d = a.to_dict()
    va_how = (
        "estimated from expression probabilities (circumplex table)"
        if a.va_estimated
        else "regressed by the model"
    )
    parts = [
        "<!doctype html><html lang='en'><meta charset='utf-8'>",
        f"<title>emotion-stream: {esc(a.info.path.name)}</title><style>{_CSS}</style><body>",
        f"<h1>Expression report: {esc(a.info.path.name)}</h1>",
        f"<p class='meta'>{esc(' · '.join(summary_lines(a)[:1]))}</p>",
        f"<p class='notice'>{esc(NOTICE)} Valence/arousal figures are {va_how}; contempt is "
        f"{'supported' if 'contempt' in a.supported else 'not supported'} by the configured "
        "models.</p>",
    ]
    if a.error:
        parts.append(f"<p class='err'>Incomplete: {esc(a.error)}</p>")
    o = a.overall
    if a.faces:
        parts.append(
            f"<h2>Overall: {esc(o.dominant)} {_pct(o.dominant_share)}</h2>"
            f"<p>{o.faces} face(s), {o.person_seconds:.1f} person-seconds.</p>"
            f"{_shares_svg(o.shares)}"
        )
    else:
        parts.append("<h2>No faces found</h2>")
    if a.voice is not None and a.voice.speech_s > 0:
        parts.append(
            "<h2>Voices</h2><p class='meta'>"
            + "<br>".join(esc(x) for x in voice_lines(a))
            + "</p><p class='meta'>The speaker is the visible face whose mouth movement matches "
            "the voice; vocal arousal is a heuristic, not an emotion label.</p>" + _voice_svg(a)
        )
    for f, fd in zip(a.faces, d["faces"], strict=True):
        thumb = a.thumbnails.get(f.number, b"")
        img = (
            f"<img alt='{esc(f.name)}' src='data:image/jpeg;base64,"
            f"{base64.b64encode(thumb).decode()}'>"
            if thumb
            else ""
        )
        va = fd["valence_arousal"]
        probs = "".join(
            f"<tr><th>{esc(k)}</th><td>{'n/a' if v is None else _pct(v)}</td></tr>"
            for k, v in fd["mean_probabilities"].items()
        )
        parts.append(
            f"<section class='face'><header>{img}<div><h2>{esc(f.name)}</h2>"
            f"<div class='dominant'>dominant: <b>{esc(f.dominant)}</b> "
            f"{_pct(f.dominant_share)}</div><div class='meta'>visible {f.visible_s:.1f} s, "
            f"{f.first_seen:.1f}–{f.last_seen:.1f} s, {f.samples} analysed frames; "
            f"valence {va['valence']:+.2f}, arousal {va['arousal']:+.2f}"
            f"{' (estimated)' if va['estimated'] else ''}</div></div></header>"
            f"{_timeline_svg(a, f)}<div class='row'>{_shares_svg(f.shares)}"
            f"<table><caption>mean probability</caption>{probs}</table></div></section>"
        )
    parts.append("</body></html>")
    path.write_text("".join(parts), encoding="utf-8")
