"""Typed live events: one frozen dataclass per event type, one envelope for all of them.

The wire contract is the JSON schema in `stream/data/events.schema.json` (version 1); a test
checks that every type here validates against it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from stream.core.data import events_schema_path
from stream.core.labels import LABELS
from stream.core.notices import NOTICE, face_name
from stream.vision.blendshapes import BLENDSHAPES, action_units
from stream.vision.gaze import AttentionDrop as AttentionDropSignal
from stream.vision.gestures import HeadGesture
from stream.vision.pipeline import FrameResult

SCHEMA_VERSION = 1


def schema() -> dict[str, Any]:
    """The JSON schema of every event (draft 2020-12)."""
    data: dict[str, Any] = json.loads(events_schema_path().read_text("utf-8"))
    return data


@dataclass(frozen=True)
class Event:
    """Base of every event; `TYPE` is the wire `type`."""

    TYPE: ClassVar[str] = ""

    def payload(self) -> dict[str, Any]:
        """The event's fields as sent (after the envelope)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class SessionStarted(Event):
    """The first event of every subscriber; a publisher's also says what to send.

    `send` (publishers only): `{"max_fps": F, "max_fps_with_audio": A, "max_side": N}`: at
    most F video frames per second (`live.max_fps`, what is analysed), A when the publisher
    also sends audio (voices are matched to mouths at `audio.mouth_fps`), with the longer side
    at most N pixels (`live.send_max_side`, else `detection.max_side`); more would be decoded
    and dropped.
    """

    TYPE: ClassVar[str] = "session.started"
    role: str
    labels_supported: list[str]
    purpose: str
    ice_servers: list[dict[str, str]]
    notice: str = NOTICE
    viewer_token: str | None = None  # publishers only
    send: dict[str, float] | None = None  # publishers only

    def payload(self) -> dict[str, Any]:
        out = super().payload()
        for key in ("viewer_token", "send"):
            if out[key] is None:
                del out[key]
        return out


@dataclass(frozen=True)
class Answer(Event):
    TYPE: ClassVar[str] = "answer"
    sdp: str
    sdp_type: str = "answer"


@dataclass(frozen=True)
class Frame(Event):
    TYPE: ClassVar[str] = "frame"
    track: str
    media_t: float
    width: int
    height: int
    faces: list[dict[str, Any]]
    metrics: dict[str, Any]


@dataclass(frozen=True)
class FaceSummaries(Event):
    TYPE: ClassVar[str] = "face.summary"
    faces: list[dict[str, Any]]
    overall: dict[str, Any]


@dataclass(frozen=True)
class FaceRenamed(Event):
    TYPE: ClassVar[str] = "face.renamed"
    id: int
    name: str


@dataclass(frozen=True)
class FaceExcluded(Event):
    TYPE: ClassVar[str] = "face.excluded"
    id: int
    excluded: bool


@dataclass(frozen=True)
class SessionReset(Event):
    TYPE: ClassVar[str] = "session.reset"


@dataclass(frozen=True)
class Error(Event):
    TYPE: ClassVar[str] = "error"
    code: str
    message: str


@dataclass(frozen=True)
class SessionSummary(Event):
    TYPE: ClassVar[str] = "session.summary"
    duration_s: float
    faces: list[dict[str, Any]]
    overall: dict[str, Any]
    #: one person each: a face with its linked voice, or a face or voice alone (file JSON's)
    participants: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SessionEnded(Event):
    TYPE: ClassVar[str] = "session.ended"
    reason: str


@dataclass(frozen=True)
class Prosody(Event):
    """A speaker's prosody window; `report` is `ProsodyReport.to_dict()`, sent inline."""

    TYPE: ClassVar[str] = "prosody"
    speaker: str
    face_id: int | None
    name: str | None
    report: dict[str, Any] = field(default_factory=dict)
    voice_id: int | None = None
    voice_name: str | None = None
    voice_face_id: int | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "face_id": self.face_id,
            "name": self.name,
            **self.report,
            "voice_id": self.voice_id,
            "voice_name": self.voice_name,
            "voice_face_id": self.voice_face_id,
        }


@dataclass(frozen=True)
class SpeakerActive(Event):
    TYPE: ClassVar[str] = "speaker.active"
    speaker: str
    face_id: int | None
    name: str | None
    speaking: bool
    confidence: float
    voice_id: int | None = None
    voice_name: str | None = None
    voice_face_id: int | None = None


@dataclass(frozen=True)
class Redirect(Event):
    """Admission: this worker is full; `url` is a worker with room (its page), `ws_url` its
    publisher WebSocket. Sent as an `error` event with code `redirect`, then the socket closes
    with 4503."""

    TYPE: ClassVar[str] = "error"
    message: str
    url: str
    ws_url: str
    code: str = "redirect"


@dataclass(frozen=True)
class Wall(Event):
    """The supervisor wall: one line per live call of the cluster."""

    TYPE: ClassVar[str] = "wall"
    calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class VoiceTurnEnded(Event):
    """A speech turn of an audio track finished, with its estimated vocal activation
    (-1 calm .. +1 activated; not an emotion; None under 0.8 s of speech)."""

    TYPE: ClassVar[str] = "voice.turn"
    speaker: str
    start: float
    end: float
    estimated_vocal_activation: float | None
    face_id: int | None = None
    voice_id: int | None = None

    def payload(self) -> dict[str, Any]:
        a = self.estimated_vocal_activation
        return {
            **super().payload(),
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "estimated_vocal_activation": None if a is None else round(a, 3),
        }


@dataclass(frozen=True)
class SpeakerRenamed(Event):
    """A diarized voice ("Speaker N") was given a name."""

    TYPE: ClassVar[str] = "speaker.renamed"
    id: int
    name: str


@dataclass(frozen=True)
class Gesture(Event):
    """A head gesture of a face that ended (nod or shake; media time of its track)."""

    TYPE: ClassVar[str] = "gesture"
    face: int
    gesture: str  # "nod" | "shake"
    start: float
    end: float
    swings: int
    strength_deg: float


@dataclass(frozen=True)
class AttentionDrop(Event):
    """A face looked away longer than `behaviour.drop_min_s` (sent when the drop ends)."""

    TYPE: ClassVar[str] = "attention_drop"
    face: int
    start: float
    end: float
    duration_s: float
    behaviour: str = "looking away"


def behaviour_event(e: HeadGesture | AttentionDropSignal) -> Gesture | AttentionDrop:
    """The event of a pipeline behaviour event (`FrameResult.behaviour_events`)."""
    if isinstance(e, HeadGesture):
        return Gesture(e.face, e.kind, round(e.start, 3), round(e.end, 3), e.swings,
                       round(e.strength, 1))  # fmt: skip
    return AttentionDrop(e.face, round(e.start, 3), round(e.end, 3), round(e.end - e.start, 2))


#: Every event type, for the schema test and for readers.
EVENT_TYPES: tuple[type[Event], ...] = (
    SessionStarted,
    Answer,
    Frame,
    FaceSummaries,
    FaceRenamed,
    FaceExcluded,
    SessionReset,
    Error,
    SessionSummary,
    SessionEnded,
    Prosody,
    SpeakerActive,
    SpeakerRenamed,
    VoiceTurnEnded,
    Redirect,
    Wall,
    Gesture,
    AttentionDrop,
)


def envelope(
    event: Event, session: str, seq: int, ts: float, v: int = SCHEMA_VERSION
) -> dict[str, Any]:
    """The JSON-ready message: version, type, session, sequence number, time, then the payload."""
    return {
        "v": v,
        "type": event.TYPE,
        "session": session,
        "seq": seq,
        "ts": round(ts, 4),
        **event.payload(),
    }


#: The session id used before a session exists (errors answering a client's first messages).
NO_SESSION = "-" * 8


class EventFactory:
    """Stamps the events of one session with version, session id, sequence number and time."""

    def __init__(self, session: str, clock: Callable[[], float] = time.time) -> None:
        self.session = session
        self.clock = clock
        self._seq = itertools.count()

    def make(self, event: Event) -> dict[str, Any]:
        return envelope(event, self.session, next(self._seq), self.clock())


def _r(x: float, n: int = 4) -> float:
    return round(float(x), n)


def face_payloads(
    result: FrameResult,
    names: dict[int, str],
    supported: np.ndarray,
    va_estimated: bool,
    actions_raw: bool = False,
) -> list[dict[str, Any]]:
    """Per-face entries of a frame event (excluded faces carry only their box)."""
    out: list[dict[str, Any]] = []
    for f in result.faces:
        s = f.sample
        extra: dict[str, Any] = {}
        if f.actions is not None:
            extra["actions"] = {
                k: _r(min(max(v, 0.0), 1.0)) for k, v in action_units(f.actions).items()
            }
            if actions_raw:
                extra["blendshapes"] = {
                    b: _r(min(max(float(v), 0.0), 1.0))
                    for b, v in zip(BLENDSHAPES, f.actions, strict=True)
                }
        if f.signals is not None:  # head pose, gaze/attention, posture (behaviour.enabled)
            extra.update(f.signals.to_json())
        out.append(
            {
                "id": f.number,
                "name": names.get(f.number) or face_name(f.number),
                "box": [_r(v) for v in s.box],
                "excluded": False,
                "label": s.label,
                "confidence": _r(min(max(s.confidence, 0.0), 1.0)),
                "probs": {
                    lab: (_r(min(max(s.probs[i], 0.0), 1.0)) if supported[i] else None)
                    for i, lab in enumerate(LABELS)
                },
                "valence": _r(np.clip(s.valence_arousal[0], -1, 1), 3),
                "arousal": _r(np.clip(s.valence_arousal[1], -1, 1), 3),
                "va_estimated": va_estimated,
                "fresh": f.fresh,
                **extra,
            }
        )
    w, h = result.width, result.height
    for number, box in result.excluded:
        out.append(
            {
                "id": number,
                "name": names.get(number) or face_name(number),
                "box": [_r(box[0] / w), _r(box[1] / h), _r(box[2] / w), _r(box[3] / h)],
                "excluded": True,
            }
        )
    return out
