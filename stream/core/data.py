"""Files that ship inside the package: the web pages, the default config, the model manifest and
the event schema. Found with `importlib.resources`, so they work from a wheel as from a checkout
(in a checkout `stream/data/{web,configs,models}` link to the top-level folders)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(*parts: str) -> Path:
    """Path of a packaged data file or folder (`stream/data/...`)."""
    root = resources.files("stream").joinpath("data", *parts)
    # Wheels and editable installs unpack to real files; zip imports are not supported.
    return Path(str(root))


def web_dir() -> Path:
    """The overlay pages served by `emotion-stream serve`."""
    return data_path("web")


def default_config_path() -> Path:
    """The default configuration (`configs/default.toml`)."""
    return data_path("configs", "default.toml")


def default_manifest_path() -> Path:
    """The model manifest (`models/manifest.toml`): names, files, sha256 and I/O specs."""
    return data_path("models", "manifest.toml")


def events_schema_path() -> Path:
    """The JSON schema of live events (wire contract, version 1)."""
    return data_path("events.schema.json")
