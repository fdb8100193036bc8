"""emotion-stream: per-participant facial expression analytics for live calls and video files."""

__version__ = "0.1.0"
