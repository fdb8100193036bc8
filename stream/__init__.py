"""emotion-stream: per-participant facial expression analytics for live calls and video files.

The public Python API (everything else under `stream.` is internal and may change):

    import stream
    a = stream.analyze("interview.mp4")          # typed Analysis
    df = a.to_pandas()                            # per-face timeline (emotion-stream[pandas])
    for item in stream.analyze_many("clips/", out="results/", workers=2):
        print(item.status, item.path)
    with stream.Analyzer() as an:                 # your own frames and audio
        events = an.push_video(image, t)
    # live: stream.client.view(...), stream.client.publish(...) (async)

Names are imported on first use, so `import stream` stays fast; their types are declared in
`__init__.pyi` for type checkers (a test keeps both lists equal).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "analyze": "stream.api.run",
    "analyze_many": "stream.api.run",
    "FileAnalysis": "stream.api.run",
    "Analyzer": "stream.api.analyzer",
    "Analysis": "stream.api.results",
    "Face": "stream.api.results",
    "Speaker": "stream.api.results",
    "Participant": "stream.api.results",
    "Overall": "stream.api.results",
    "Sample": "stream.api.results",
    "Source": "stream.api.results",
    "Tracklet": "stream.api.results",
    "Turn": "stream.api.results",
    "VoiceTurn": "stream.api.results",
    "EmotionStreamError": "stream.core.errors",
    "ConfigError": "stream.core.errors",
    "MediaError": "stream.core.errors",
    "NoFacesError": "stream.core.errors",
    "NoSpeechError": "stream.core.errors",
    "ModelError": "stream.core.errors",
}

__all__ = [*_EXPORTS, "client", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "client":
        return importlib.import_module("stream.client")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "client"])
