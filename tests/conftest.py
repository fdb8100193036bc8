"""Shared fixtures: the real models and media in ../shared (CI has them beside the clone)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.analysis.stages import Stages
from stream.core.config import Config, load_config
from stream.core.types import U8
from stream.models.runtime import SessionFactory, make_factory
from stream.vision.pipeline import VisionPipeline

ROOT = Path(__file__).resolve().parent.parent  # the repository
SHARED = Path(
    __import__("os").environ.get("EMOTION_STREAM_SHARED", str(ROOT.parent / "shared"))
).resolve()
MODELS = SHARED / "models"
MEDIA = SHARED / "media"
VIDEO = MEDIA / "video"


def _require(path: Path) -> Path:
    if not path.exists():
        raise RuntimeError(
            f"{path} is missing: the tests need the real models and media in ../shared "
            "(or EMOTION_STREAM_SHARED=/path/to/shared)"
        )
    return path


@pytest.fixture(scope="session")
def config() -> Config:
    """Default configuration pointed at ../shared/models."""
    _require(MODELS)
    return load_config(ROOT / "configs" / "default.toml", env={}).replace("models", dir=str(MODELS))


@pytest.fixture(scope="session")
def factory(config: Config) -> SessionFactory:
    """One session factory for the whole test run (sessions are shared, as in production)."""
    return make_factory(config)


@pytest.fixture(scope="session")
def stages(config: Config, factory: SessionFactory) -> Stages:
    """Every model loaded once for the test run (as a server or `analyze` does)."""
    return Stages(config, factory)


@pytest.fixture()
def pipeline(config: Config, factory: SessionFactory) -> VisionPipeline:
    """A fresh pipeline (new identity state) over the shared sessions."""
    return VisionPipeline.from_config(config, factory)


@pytest.fixture(scope="session")
def media() -> Path:
    return _require(MEDIA)


def imread(path: Path) -> U8:
    """Read an image as BGR uint8, failing loudly if it cannot be read."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError(f"cannot read test image {path}")
    return np.ascontiguousarray(img, dtype=np.uint8)


def read_labels(path: Path) -> list[dict[str, str]]:
    """Rows of a labels.csv index."""
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
