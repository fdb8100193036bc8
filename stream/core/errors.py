"""Errors a user can act on. The CLI prints their message and exits with their code."""


class EmotionStreamError(Exception):
    """Base error: its message is meant for the user; `exit_code` is the CLI's exit status."""

    exit_code = 1


class ConfigError(EmotionStreamError):
    """A configuration file, flag or environment variable has an invalid value."""

    exit_code = 2


class ModelError(EmotionStreamError):
    """A model file is missing, corrupt or does not match its manifest entry."""

    exit_code = 5


class MediaError(EmotionStreamError):
    """An input file is missing, unreadable, truncated or has no usable stream."""

    exit_code = 3


class NoFacesError(EmotionStreamError):
    """The input was read correctly but no face was found in it."""

    exit_code = 4


class NoSpeechError(EmotionStreamError):
    """An audio file was read correctly but no speech was found in it."""

    exit_code = 7
