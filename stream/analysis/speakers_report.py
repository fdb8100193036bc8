"""Report pieces for diarized speakers and facial actions (terminal lines, CSV cells, HTML).

Kept apart from report.py so its layout can change without touching these sections; report.py
calls them at its extension points.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from stream.analysis.participants import participants
from stream.analysis.speakers import ACTIVATION_NOTE, speaker_label
from stream.core.notices import face_name
from stream.vision.blendshapes import AU_NAMES, AU_NOTES, NOT_MAPPED

if TYPE_CHECKING:
    from stream.analysis.summary import Analysis

#: CSV columns added by this module (after report.py's own).
CSV_FIELDS = [
    "speaker_id",
    "speaker_name",
    "estimated_vocal_activation",
    *[f"au_{n}" for n in AU_NAMES],
]
_COLOURS = ("#1a73e8", "#e8710a", "#188038", "#a142f4", "#d93025", "#12b5cb", "#f9ab00", "#5f6368")


def header_line(a: Analysis) -> str | None:
    """The first terminal line of an audio-only file (None for other kinds)."""
    if a.info.kind != "audio":
        return None
    speed = a.info.duration / a.wall_s if a.wall_s > 0 else 0.0
    return (
        f"{a.info.path.name}: {a.info.duration:.1f} s audio ({a.info.codec}), analysed in "
        f"{a.wall_s:.1f} s ({speed:.1f}x real time)"
    )


def speaker_lines(a: Analysis) -> list[str]:
    """One line per diarized speaker: time, share, turns, prosody, linked face."""
    s = a.speakers
    if s is None or not s.speakers:
        return []
    faces = {f.number: f.name for f in a.faces}
    out = [f"Speakers: {len(s.speakers)} (estimated from voice prints), {s.speech_s:.1f} s speech"]
    width = max(len(x.name) for x in s.speakers)
    for x in s.speakers:
        parts = [f"speaking {x.speaking_s:.1f} s ({100 * x.share:.1f}%)", f"{x.turns} turn(s)"]
        parts += x.prosody_parts()
        act = x.activation
        if act.median is not None:
            parts.append(
                f"estimated vocal activation {act.median:+.2f} (high {100 * act.high_share:.0f}%"
                f", low {100 * act.low_share:.0f}% of turns' time)"
            )
        if x.face is not None:
            parts.append(f"= {faces.get(x.face) or face_name(x.face)}")
        elif a.faces:
            parts.append("(no visible face matched)")
        out.append(f"{x.name:<{width}}  " + "  ".join(parts))
    return out


def action_lines(a: Analysis) -> list[str]:
    """One line per face: mean smile, jaw drop, brow raise (facial-action intensities)."""
    if not a.actions:
        return []
    names = {f.number: f.name for f in a.faces}
    out = []
    for n, st in sorted(a.actions.items()):
        m = st.to_dict(False)["mean"]
        assert isinstance(m, dict)
        out.append(
            f"{names.get(n, f'Face {n}')}  facial actions (mean 0..1): smile {m['AU12_smile']:.2f}"
            f"  jaw drop {m['AU26_jaw_drop']:.2f}  brow raise {m['AU2_outer_brow_raise']:.2f}"
            f"  brow lower {m['AU4_brow_lower']:.2f}"
        )
    return out


def csv_cells(a: Analysis, number: int, t: float) -> dict[str, object]:
    """Speaker and AU columns of a face's row at time t."""
    row: dict[str, object] = {}
    st = a.actions.get(number)
    vec = st.at(t) if st is not None else None
    if vec is not None:
        for name, v in zip(AU_NAMES, vec, strict=True):
            row[f"au_{name}"] = f"{float(v):.4f}"
    if a.speakers is not None:
        sp = a.speakers.at(t)
        linked = {x.number: x.face for x in a.speakers.speakers}
        if sp is not None and linked.get(sp) == number:
            row["speaker_id"] = sp
            row["speaker_name"] = _name(a, sp)
            row["estimated_vocal_activation"] = _arousal(a, sp, t)
    return row


def speaker_rows(a: Analysis) -> list[dict[str, object]]:
    """Rows for speech no face stands for (audio-only files, off-screen speakers): one per
    prosody report, face columns empty."""
    if a.speakers is None or a.voice is None:
        return []
    linked = {x.number for x in a.speakers.speakers if x.face is not None}
    rows: list[dict[str, object]] = []
    for report, _ in a.voice.timeline:
        if not report.speaking:
            continue
        sp = a.speakers.at(report.t)
        if sp is None or sp in linked:
            continue

        def fmt(x: float | None, n: int) -> str:
            return "" if x is None else f"{x:.{n}f}"

        rows.append(
            {
                "time_s": f"{report.t:.3f}",
                "face_id": "",
                "speaker_id": sp,
                "speaker_name": _name(a, sp),
                "speaking": "true",
                "pitch_hz": fmt(report.f0_median_hz, 1),
                "energy_dbfs": fmt(report.energy_dbfs, 1),
                "speaking_rate_per_s": fmt(report.rate_per_s, 2),
                "vocal_arousal_heuristic": fmt(report.vocal_arousal_heuristic, 2),
                "estimated_vocal_activation": _arousal(a, sp, report.t),
            }
        )
    return rows


def _arousal(a: Analysis, sp: int, t: float) -> str:
    """The estimated activation of speaker `sp`'s turn at `t`, as a CSV cell."""
    assert a.speakers is not None
    for x in a.speakers.speakers:
        if x.number == sp:
            v = x.arousal_at(t)
            return "" if v is None else f"{v:.3f}"
    return ""


def activation_colour(v: float | None) -> str:
    """Grey for no value; blue (calm, -1) through pale (0) to red (activated, +1)."""
    if v is None:
        return "#c8c8c8"
    v = max(-1.0, min(1.0, v))
    if v >= 0:
        r, g, b = 235, round(235 - 180 * v), round(235 - 200 * v)
    else:
        r, g, b = round(235 + 200 * v), round(235 + 120 * v), 235
    return f"#{r:02x}{g:02x}{b:02x}"


def _name(a: Analysis, sp: int) -> str:
    assert a.speakers is not None
    for x in a.speakers.speakers:
        if x.number == sp:
            return x.name
    return speaker_label(sp)


def speakers_html(a: Analysis, span: float) -> str:
    """'Who speaks when' on the report's time axis, and a table of speakers' prosody."""
    s = a.speakers
    if s is None or not s.speakers or span <= 0:
        return ""
    colour = {x.number: _COLOURS[i % len(_COLOURS)] for i, x in enumerate(s.speakers)}
    lanes = []
    for i, x in enumerate(s.speakers):
        # One lane per speaker on the report's time axis: who speaks when (the speaker's
        # colour, a thin bar) and each turn's estimated vocal activation (blue calm .. red
        # activated, grey: under 0.8 s).
        bars = "".join(
            f'<rect x="{1000 * t.start / span:.1f}" y="{i * 22 + 16}" '
            f'width="{max(1000 * (t.end - t.start) / span, 0.5):.1f}" height="3" '
            f'fill="{colour[x.number]}"></rect>'
            for t in s.turns
            if t.speaker == x.number
        )
        for t in x.voice_turns:
            value = "no value (under 0.8 s)" if t.arousal is None else f"{t.arousal:+.2f}"
            bars += (
                f'<rect x="{1000 * t.start / span:.1f}" y="{i * 22 + 2}" '
                f'width="{max(1000 * (t.end - t.start) / span, 0.5):.1f}" height="13" '
                f'fill="{activation_colour(t.arousal)}" stroke="{colour[x.number]}" '
                f'stroke-width="0.5"><title>{escape(x.name)} {t.start:.1f}-{t.end:.1f} s: '
                f"estimated vocal activation {value}</title></rect>"
            )
        lanes.append(bars)
    h = 22 * len(s.speakers) + 4
    svg = (
        f'<svg viewBox="0 0 1000 {h}" preserveAspectRatio="none" width="100%" height="{h}" '
        f'role="img" aria-label="who speaks when">{"".join(lanes)}</svg>'
    )
    faces = {f.number: f.name for f in a.faces}
    rows = []
    for x in s.speakers:

        def v(val: float | None, fmt: str) -> str:
            return "" if val is None else format(val, fmt)

        face = faces.get(x.face, f"Face {x.face}") if x.face is not None else "-"
        rows.append(
            f'<tr><td><span style="color:{colour[x.number]}">&#9632;</span> {escape(x.name)}</td>'
            f"<td>{x.speaking_s:.1f} s</td><td>{100 * x.share:.0f}%</td><td>{x.turns}</td>"
            f"<td>{v(x.f0_median_hz, '.0f')} Hz</td><td>{v(x.energy_dbfs, '.0f')} dBFS</td>"
            f"<td>{v(x.rate_per_s, '.1f')}/s</td>"
            f"<td>{v(x.activation.median, '+.2f')}</td>"
            f"<td>{100 * x.activation.high_share:.0f}% / {100 * x.activation.low_share:.0f}%</td>"
            f"<td>{escape(face)}</td></tr>"
        )
    return (
        '<section class="speakers"><h2>Speakers</h2>'
        f"<p>{len(s.speakers)} speaker(s) estimated from voice prints; "
        f"{s.speech_s:.1f} s of speech. One lane per speaker: each turn coloured by its "
        "<b>estimated vocal activation</b> (blue calm, red activated, grey under 0.8 s); "
        f"{escape(ACTIVATION_NOTE)}</p>{svg}"
        "<table><tr><th>Speaker</th><th>Speaking</th><th>Share</th><th>Turns</th>"
        "<th>Pitch</th><th>Energy</th><th>Rate</th><th>Est. vocal activation</th>"
        "<th>High / low</th><th>Face</th></tr>"
        + "".join(rows)
        + "</table>"
        + participants_html(a)
        + "</section>"
    )


def participants_html(a: Analysis) -> str:
    """One row per participant: a face and its linked voice together, others on their own."""
    people = participants(a.faces, a.speakers)
    if not any(p.speaker is not None for p in people):
        return ""
    rows = []
    for p in people:
        f, sp = p.face, p.speaker
        face = (
            f"{escape(f.name or face_name(f.number))}, seen {f.visible_s:.1f} s, mostly "
            f"{escape(f.dominant)} ({100 * f.dominant_share:.0f}%)"
            if f is not None
            else "no face linked"
        )
        voice = "not heard (no voice linked)"
        if sp is not None:
            act = sp.activation
            level = "no value" if act.median is None else f"{act.median:+.2f}"
            voice = (
                f"{escape(sp.name)}, speaking {sp.speaking_s:.1f} s, estimated vocal activation "
                f"{level} (high {100 * act.high_share:.0f}%, low {100 * act.low_share:.0f}%)"
            )
        rows.append(f"<tr><td><b>{escape(p.name)}</b></td><td>{face}</td><td>{voice}</td></tr>")
    return (
        "<h3>Participants</h3><p>A face and the voice matched to its mouth are one person; "
        "faces and voices never matched stay separate. Expressions shown are not feelings; "
        "vocal activation is not an emotion.</p><table><tr><th>Participant</th>"
        "<th>Face (shown expression)</th><th>Voice</th></tr>" + "".join(rows) + "</table>"
    )


def actions_html(a: Analysis) -> str:
    """Per-face facial-action means as small bars, with what the AU names mean."""
    if not a.actions:
        return ""
    names = {f.number: f.name for f in a.faces}
    cards = []
    for n, st in sorted(a.actions.items()):
        m = st.to_dict(False)["mean"]
        assert isinstance(m, dict)
        bars = "".join(
            f'<div title="{escape(AU_NOTES[au])}">{escape(au)} '
            f'<span style="display:inline-block;height:8px;width:{100 * float(val):.0f}px;'
            f'background:#1a73e8"></span> {float(val):.2f}</div>'
            for au, val in m.items()
        )
        cards.append(f"<div><h3>{escape(names.get(n, f'Face {n}'))}</h3>{bars}</div>")
    notes = "; ".join(f"{k}: {v}" for k, v in NOT_MAPPED.items())
    return (
        '<section class="actions"><h2>Facial actions</h2><p>Mean intensities (0..1) of '
        "MediaPipe blendshapes under approximate AU names; facial actions, not emotions. "
        f"Not offered: {escape(notes)}.</p>" + "".join(cards) + "</section>"
    )
