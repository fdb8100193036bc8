"""The public result of an analysis: typed faces, speakers, participants and timelines, with
the same JSON, CSV and HTML writers as `emotion-stream analyze`, and pandas/matplotlib views.

Everything here reads the internal `stream.analysis.summary.Analysis` through its stable views
(the JSON document of schema `emotion-stream.analysis` v1, the CSV timeline and the report
writers), so these types change only with that schema.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.analysis import report
from stream.analysis.summary import Analysis as _Internal
from stream.core.errors import ConfigError
from stream.core.labels import LABELS

if TYPE_CHECKING:  # optional extras: imported when used
    import pandas
    from matplotlib.figure import Figure

PANDAS_EXTRA = "pip install 'emotion-stream[pandas]'"


def _pandas() -> Any:
    """The pandas module, or a clear error naming the extra that installs it."""
    try:
        import pandas
    except ImportError:
        raise ConfigError(f"DataFrames need pandas: {PANDAS_EXTRA}") from None
    return pandas


@dataclass(frozen=True)
class Tracklet:
    """One stretch of a face's track before whole-file identity consolidation joined it to
    others (a face that left and came back has several)."""

    id: int
    online_id: int  # the face number shown while the file was analysed
    from_s: float
    to_s: float


@dataclass(frozen=True)
class Face:
    """One person's face over the whole stream.

    `shares` are fractions of `visible_s` during which each expression label (or "uncertain")
    was shown; `dominant` is the label with the largest share. Expressions are what a face
    shows, not what its owner feels.
    """

    id: int
    name: str
    dominant: str
    dominant_share: float
    uncertain_share: float
    shares: dict[str, float]
    visible_s: float
    first_seen_s: float
    last_seen_s: float
    analysed_frames: int
    mean_probabilities: dict[str, float | None]
    valence: float
    arousal: float
    va_estimated: bool
    tracklets: list[Tracklet] = field(default_factory=list)
    speaker_ids: list[int] = field(default_factory=list)  # diarized voices linked to this face
    #: Behaviour signals (config behaviour.enabled; README "Attention, head gestures and
    #: posture"): attention_share, looking_away_drops, nods, shakes, blink_rate_per_min,
    #: posture shares...; None when off. Behaviour, not states of mind.
    behaviour: dict[str, Any] | None = None
    gestures: list[dict[str, Any]] = field(default_factory=list)  # nods/shakes: start, end, ...
    attention_drops: list[dict[str, Any]] = field(default_factory=list)  # looking away spans

    @classmethod
    def from_dict(cls, d: dict[str, Any], tracklets: list[Tracklet], speakers: list[int]) -> Face:
        dom, va = d["dominant"], d["valence_arousal"]
        return cls(
            id=int(d["id"]),
            name=str(d["name"]),
            dominant=str(dom["label"]),
            dominant_share=float(dom["share"]),
            uncertain_share=float(dom["uncertain_share"]),
            shares=dict(d["shares"]),
            visible_s=float(d["visible_s"]),
            first_seen_s=float(d["first_seen_s"]),
            last_seen_s=float(d["last_seen_s"]),
            analysed_frames=int(d["analysed_frames"]),
            mean_probabilities=dict(d["mean_probabilities"]),
            valence=float(va["valence"]),
            arousal=float(va["arousal"]),
            va_estimated=bool(va["estimated"]),
            tracklets=tracklets,
            speaker_ids=speakers,
            behaviour=d.get("behaviour"),
            gestures=list(d.get("gestures", [])),
            attention_drops=list(d.get("attention_drops", [])),
        )


@dataclass(frozen=True)
class VoiceTurn:
    """A speaker's turn with its estimated vocal activation (-1 calm .. 1 activated, from
    level-independent voice cues; None: too short to estimate). Not a feeling."""

    start_s: float
    end_s: float
    activation: float | None


@dataclass(frozen=True)
class Speaker:
    """One diarized voice ("Speaker 1", ...): how long and how often it spoke, its prosody
    medians, and the face it was linked to (None: never linked, e.g. off screen)."""

    id: int
    name: str
    speaking_s: float
    share_of_speech: float
    turns: int
    face_id: int | None
    face_link_share: float  # share of its speech matched to that face's mouth
    prosody: dict[str, Any]  # medians: pitch_median_hz, energy_dbfs, speaking_rate_per_s, ...
    voice_turns: list[VoiceTurn] = field(default_factory=list)
    #: The estimated vocal activation over its turns (median, shares high/low, standout turns,
    #: and a note on what it can mean), as in the JSON; None when not estimated.
    vocal_activation: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Speaker:
        known = {"id", "name", "speaking_s", "share_of_speech", "turns", "face_id"}
        known |= {"face_name", "face_link_share", "voice_turns", "vocal_activation"}
        return cls(
            id=int(d["id"]),
            name=str(d["name"]),
            speaking_s=float(d["speaking_s"]),
            share_of_speech=float(d["share_of_speech"]),
            turns=int(d["turns"]),
            face_id=None if d.get("face_id") is None else int(d["face_id"]),
            face_link_share=float(d.get("face_link_share") or 0.0),
            prosody={k: v for k, v in d.items() if k not in known},
            voice_turns=[
                VoiceTurn(
                    float(t["start"]),
                    float(t["end"]),
                    None if t.get("arousal") is None else float(t["arousal"]),
                )
                for t in d.get("voice_turns") or []
            ],
            vocal_activation=d.get("vocal_activation"),
        )


@dataclass(frozen=True)
class Turn:
    """A stretch of speech by one diarized speaker (who spoke when)."""

    start_s: float
    end_s: float
    speaker_id: int


@dataclass(frozen=True)
class Participant:
    """A person as far as the analysis can tell: a face and the voice linked to it, a face
    alone, or a voice no face is linked to (the JSON's `participants`)."""

    name: str
    face: Face | None
    speaker: Speaker | None


@dataclass(frozen=True)
class Overall:
    """The room: expression totals across every face, in person-seconds."""

    faces: int
    person_seconds: float
    dominant: str
    dominant_share: float
    uncertain_share: float
    shares: dict[str, float]


@dataclass(frozen=True)
class Sample:
    """One face at one analysed frame (smoothed values; `box` normalised x1, y1, x2, y2)."""

    t: float
    face_id: int
    label: str
    confidence: float
    probabilities: dict[str, float | None]
    valence: float
    arousal: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Source:
    """What was analysed."""

    path: str
    kind: str  # video, image or audio
    duration_s: float
    width: int
    height: int
    fps: float


class Analysis:
    """The result of analysing one file or stream (`stream.analyze`, `Analyzer.close`).

    Attributes:
        source: the input file or stream.
        faces: one entry per person's face, numbered by first appearance.
        speakers: diarized voices (empty without audio or with voice analysis off).
        turns: who spoke when (diarized turns, in time order).
        participants: people: a face with its linked voice, a face alone, or a voice alone,
            in order of first appearance.
        overall: expression totals across every face.
        complete: False when decoding failed part-way (`error` says why; results cover the
            part before the failure).
    """

    def __init__(self, internal: _Internal) -> None:
        self._a = internal
        doc = internal.to_dict()
        self._doc = doc
        src = doc["source"]
        self.source = Source(
            str(src["path"]),
            str(src["kind"]),
            float(src["duration_s"]),
            int(src["width"]),
            int(src["height"]),
            float(src["fps"]),
        )
        ana = doc["analysis"]
        self.complete: bool = bool(ana["complete"])
        self.error: str = ana["error"] or ""
        self.warnings: list[str] = list(ana["warnings"])
        self.fps: float = float(ana["fps"])
        self.analysed_frames: int = int(ana["analysed_frames"])
        self.labels_supported: list[str] = list(ana["labels_supported"])
        self.notice: str = str(doc["notice"])
        sp = doc.get("speakers") or {}
        self.speakers: list[Speaker] = [Speaker.from_dict(s) for s in sp.get("speakers", [])]
        self.turns: list[Turn] = [
            Turn(float(t["start_s"]), float(t["end_s"]), int(t["speaker"]))
            for t in sp.get("turns", [])
        ]
        tracklets: dict[int, list[Tracklet]] = {}
        for f in (doc.get("identity") or {}).get("faces", []):
            tracklets[int(f["id"])] = [
                Tracklet(int(t["id"]), int(t["online_id"]), float(t["from_s"]), float(t["to_s"]))
                for t in f["tracklets"]
            ]
        self.faces: list[Face] = [
            Face.from_dict(
                f,
                tracklets.get(int(f["id"]), []),
                [s.id for s in self.speakers if s.face_id == int(f["id"])],
            )
            for f in doc["faces"]
        ]
        o = doc["overall"]
        self.overall = Overall(
            int(o["faces"]),
            float(o["person_seconds"]),
            str(o["dominant"]["label"]),
            float(o["dominant"]["share"]),
            float(o["dominant"]["uncertain_share"]),
            dict(o["shares"]),
        )
        faces = {f.id: f for f in self.faces}
        voices = {sp.id: sp for sp in self.speakers}
        self.participants: list[Participant] = [
            Participant(
                str(p["name"]),
                faces.get(p["face_id"]) if p.get("face_id") is not None else None,
                voices.get(p["speaker_id"]) if p.get("speaker_id") is not None else None,
            )
            for p in doc.get("participants") or []
        ]

    def __repr__(self) -> str:
        return (
            f"<Analysis {Path(self.source.path).name}: {len(self.faces)} face(s), "
            f"{len(self.speakers)} speaker(s), {self.analysed_frames} frames>"
        )

    def face(self, face_id: int) -> Face:
        """The face with this id.

        Raises:
            KeyError: no such face.
        """
        for f in self.faces:
            if f.id == face_id:
                return f
        raise KeyError(f"no face {face_id}; faces: {[f.id for f in self.faces]}")

    def timeline(self, face_id: int | None = None) -> list[Sample]:
        """Every analysed frame of one face (or of every face), in time order."""
        supported = set(self._a.supported)
        out = []
        for f in self._a.faces:
            if face_id is not None and f.number != face_id:
                continue
            for p in self._a.timelines.get(f.number, []):
                s = p.sample
                probs = {
                    lab: (float(s.probs[i]) if lab in supported else None)
                    for i, lab in enumerate(LABELS)
                }
                va = s.valence_arousal
                out.append(
                    Sample(
                        p.t, f.number, s.label, float(s.confidence), probs, float(va[0]),
                        float(va[1]), s.box,
                    )
                )  # fmt: skip
        out.sort(key=lambda x: (x.t, x.face_id))
        return out

    # -- the CLI's documents ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The summary document of `emotion-stream analyze --json` (schema v1) as a dict."""
        return self._a.to_dict()

    def to_json(self) -> str:
        """The summary as JSON text: the same document as `emotion-stream analyze --json`."""
        return report.json_text(self._a)

    def to_csv(self) -> str:
        """The per-face timeline as CSV text: the same file as `analyze --csv`."""
        return report.csv_text(self._a)

    def write_json(self, path: str | Path) -> Path:
        """Write the JSON summary (as `--json FILE`); returns the path."""
        report.write_json(self._a, Path(path))
        return Path(path)

    def write_csv(self, path: str | Path) -> Path:
        """Write the per-face timeline CSV (as `--csv FILE`); returns the path."""
        report.write_csv(self._a, Path(path))
        return Path(path)

    def write_html(self, path: str | Path) -> Path:
        """Write the self-contained HTML report (as `--html FILE`); returns the path."""
        report.write_html(self._a, Path(path))
        return Path(path)

    # -- pandas ----------------------------------------------------------------------------
    def to_pandas(self, speech: bool = False) -> pandas.DataFrame:
        """The per-face timeline as a DataFrame: the CSV's columns (`time_s`, `face_id`,
        `face_name`, `label`, `confidence`, `p_<label>`, valence/arousal, box, voice and
        facial-action columns), one row per face per analysed frame.

        Args:
            speech: also keep the CSV's rows of speech no face stands for (`face_id` empty).

        Raises:
            ConfigError: pandas is not installed (`pip install 'emotion-stream[pandas]'`).
        """
        pd = _pandas()
        df = pd.read_csv(io.StringIO(self.to_csv()), dtype={"face_name": "string"})
        if not speech:
            df = df[df["face_id"].notna()].reset_index(drop=True)
            df["face_id"] = df["face_id"].astype("int64")
        return df

    def summary_frame(self) -> pandas.DataFrame:
        """One row per face: id, name, times, dominant label and share, every label's share
        (`share_<label>`), mean probabilities (`mean_p_<label>`), mean valence and arousal.

        Raises:
            ConfigError: pandas is not installed.
        """
        pd = _pandas()
        rows = []
        for f in self.faces:
            row: dict[str, Any] = {
                "face_id": f.id,
                "name": f.name,
                "first_seen_s": f.first_seen_s,
                "last_seen_s": f.last_seen_s,
                "visible_s": f.visible_s,
                "analysed_frames": f.analysed_frames,
                "dominant": f.dominant,
                "dominant_share": f.dominant_share,
                "uncertain_share": f.uncertain_share,
            }
            row.update({f"share_{k}": v for k, v in f.shares.items()})
            row.update({f"mean_p_{k}": v for k, v in f.mean_probabilities.items()})
            row.update(valence=f.valence, arousal=f.arousal, tracklets=len(f.tracklets))
            rows.append(row)
        return pd.DataFrame(rows)

    # -- plots -----------------------------------------------------------------------------
    def plot(self, face_id: int) -> Figure:
        """A matplotlib figure of one face's timeline: each supported label's probability,
        the shown label underneath, and valence/arousal.

        Raises:
            KeyError: no such face.
        """
        from matplotlib.figure import Figure

        face = self.face(face_id)
        pts = self.timeline(face_id)
        fig = Figure(figsize=(10, 5), layout="constrained")
        ax, lab, va = fig.subplots(3, 1, sharex=True, height_ratios=[3, 1, 2])
        t = [p.t for p in pts]
        for name in self.labels_supported:
            ax.plot(t, [p.probabilities[name] for p in pts], label=name, linewidth=1.2)
        ax.set_ylabel("probability")
        ax.set_ylim(0, 1)
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=8, fontsize="small")
        share = f"{100 * face.dominant_share:.0f}%"
        fig.suptitle(f"{face.name}: {face.dominant} {share} of visible time (expressions shown)")
        order = [*self.labels_supported, "uncertain"]
        lab.scatter(t, [order.index(p.label) if p.label in order else -1 for p in pts], s=4)
        lab.set_yticks(range(len(order)), order, fontsize="x-small")
        lab.set_ylabel("shown")
        est = " (estimated)" if face.va_estimated else ""
        va.plot(t, [p.valence for p in pts], label=f"valence{est}")
        va.plot(t, [p.arousal for p in pts], label=f"arousal{est}")
        va.set_ylim(-1, 1)
        va.axhline(0, color="#999", linewidth=0.5)
        va.legend(loc="upper right", fontsize="small")
        va.set_xlabel("time (s)")
        return fig
