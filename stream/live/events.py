"""The versioned event type sent to overlays and viewers (stream/data/events.schema.json)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from stream.core.data import events_schema_path
from stream.core.labels import LABELS
from stream.core.notices import face_name
from stream.vision.pipeline import FrameResult

SCHEMA_VERSION = 1


def schema() -> dict[str, Any]:
    """The JSON schema of every event (draft 2020-12)."""
    text = events_schema_path().read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


class EventFactory:
    """Stamps events of one session with version, session id, sequence number and time."""

    def __init__(self, session: str, clock: Callable[[], float] = time.time) -> None:
        self.session = session
        self.clock = clock
        self._seq = itertools.count()

    def make(self, type_: str, **payload: Any) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "type": type_,
            "session": self.session,
            "seq": next(self._seq),
            "ts": round(self.clock(), 4),
            **payload,
        }


def _r(x: float, n: int = 4) -> float:
    return round(float(x), n)


def face_payloads(
    result: FrameResult,
    names: dict[int, str],
    supported: np.ndarray,
    va_estimated: bool,
) -> list[dict[str, Any]]:
    """Per-face entries of a frame event (excluded faces carry only their box)."""
    out: list[dict[str, Any]] = []
    for f in result.faces:
        s = f.sample
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
