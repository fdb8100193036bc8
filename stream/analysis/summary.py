"""The result of analysing one stream (a file or a live session), as written to reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream import __version__
from stream.analysis.actions import FaceActionStats, actions_notes
from stream.analysis.aggregate import FaceSummary, OverallSummary, TimelinePoint
from stream.analysis.behaviour import BehaviourSummary
from stream.analysis.participants import participants
from stream.analysis.speakers import SpeakersAnalysis
from stream.analysis.voice_summary import VoiceAnalysis
from stream.core.labels import LABELS
from stream.core.notices import NOTICE
from stream.core.types import MediaInfo

#: What the behaviour signals can and cannot mean (README "Attention, head gestures and posture").
BEHAVIOUR_NOTES = [
    "Behaviour, not states of mind: 'looking away' says where a face points, 'nodding' and "
    "'shaking' describe head movements, 'leaning in' a body position; none says what a person "
    "feels, thinks or attends to.",
    "Attention is the share of time the head and eyes point into a cone around the camera "
    "(behaviour.cone_*): a face reading notes or a second screen counts as looking away.",
    "Head pose is in degrees: yaw + = the face turns to the image's right, pitch + = up, "
    "roll + = the head tilts clockwise in the image (README).",
    "Blink rate with blink_method 'occupancy' is a rough estimate from eye openness sampled "
    "a few times a second, not counted blinks.",
    "Posture shares are of the time the upper body was visible; null means never visible, "
    "not zero.",
]


def faces_dict(
    faces: list[FaceSummary],
    overall: OverallSummary,
    va_estimated: bool,
    behaviour: BehaviourSummary | None = None,
) -> dict[str, Any]:
    """The per-face and overall part of every summary (JSON files, live summary events);
    with `behaviour`, each face's behaviour summary, nods/shakes and attention drops."""
    out = []
    for f in faces:
        d = f.to_dict(va_estimated)
        fb = behaviour.faces.get(f.number) if behaviour is not None else None
        if fb is not None:
            d["behaviour"] = fb.summary()
            d["gestures"] = [g.to_json() for g in fb.gestures]
            d["attention_drops"] = [x.to_json() for x in fb.drops]
        out.append(d)
    return {"faces": out, "overall": overall.to_dict()}


@dataclass
class Analysis:
    """Everything one analysed stream produced."""

    info: MediaInfo
    fps: float
    frames: int
    faces: list[FaceSummary]
    overall: OverallSummary
    timelines: dict[int, list[TimelinePoint]]
    thumbnails: dict[int, bytes]  # JPEG per face number
    va_estimated: bool
    supported: list[str]
    models: list[str]
    wall_s: float
    stage_ms: dict[str, float]
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    voice: VoiceAnalysis | None = None
    identity: dict[str, Any] | None = None  # whole-file identity consolidation
    speakers: SpeakersAnalysis | None = None  # diarized voices ("Speaker 1", ...)
    actions: dict[int, FaceActionStats] = field(default_factory=dict)  # facial actions per face
    actions_raw: bool = False  # also report all 52 blendshape means
    behaviour: BehaviourSummary | None = None  # head pose, attention, gestures, posture

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (timelines go to CSV/HTML, not here)."""
        return {
            "schema": "emotion-stream.analysis",
            "schema_version": 1,
            "tool": {"name": "emotion-stream", "version": __version__},
            "source": {
                "path": str(self.info.path),
                "kind": self.info.kind,
                "width": self.info.width,
                "height": self.info.height,
                "duration_s": round(self.info.duration, 3),
                "fps": round(self.info.fps, 3),
                "codec": self.info.codec,
            },
            "analysis": {
                "fps": self.fps,
                "analysed_frames": self.frames,
                "wall_s": round(self.wall_s, 3),
                "stage_ms_mean": {k: round(v, 3) for k, v in self.stage_ms.items()},
                "models": self.models,
                "labels_supported": self.supported,
                "labels_not_supported": [x for x in LABELS if x not in self.supported],
                "complete": not self.error,
                "error": self.error or None,
                "warnings": self.warnings,
            },
            "notice": NOTICE,
            **faces_dict(self.faces, self.overall, self.va_estimated, self.behaviour),
            "behaviour_notes": BEHAVIOUR_NOTES if self.behaviour is not None else None,
            "voice": (
                self.voice.to_dict({f.number: f.name for f in self.faces}) if self.voice else None
            ),
            "identity": self.identity,
            "speakers": (
                self.speakers.to_dict({f.number: f.name for f in self.faces})
                if self.speakers
                else None
            ),
            "facial_actions": self.actions_dict(),
            # A face and the voice linked to it as one person; unlinked ones stay apart.
            "participants": [p.to_dict() for p in participants(self.faces, self.speakers)],
        }

    def actions_dict(self) -> dict[str, object] | None:
        """Per-face facial-action means and peaks, with what the AU names mean."""
        if not self.actions:
            return None
        names = {f.number: f.name for f in self.faces}
        return {
            **actions_notes(),
            "faces": [
                {"id": n, "name": names.get(n, ""), **s.to_dict(self.actions_raw)}
                for n, s in sorted(self.actions.items())
            ],
        }
