# Types of the public API for type checkers; stream/__init__.py imports the same names lazily.
from stream.api.analyzer import Analyzer as Analyzer
from stream.api.results import Analysis as Analysis
from stream.api.results import Face as Face
from stream.api.results import Overall as Overall
from stream.api.results import Participant as Participant
from stream.api.results import Sample as Sample
from stream.api.results import Source as Source
from stream.api.results import Speaker as Speaker
from stream.api.results import Tracklet as Tracklet
from stream.api.results import Turn as Turn
from stream.api.results import VoiceTurn as VoiceTurn
from stream.api.run import FileAnalysis as FileAnalysis
from stream.api.run import analyze as analyze
from stream.api.run import analyze_many as analyze_many
from stream.core.errors import ConfigError as ConfigError
from stream.core.errors import EmotionStreamError as EmotionStreamError
from stream.core.errors import MediaError as MediaError
from stream.core.errors import ModelError as ModelError
from stream.core.errors import NoFacesError as NoFacesError
from stream.core.errors import NoSpeechError as NoSpeechError

__version__: str
__all__: list[str]
_EXPORTS: dict[str, str]
