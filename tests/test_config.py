"""Configuration loading and validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stream.core.config import ENV_MODELS, ENV_PROVIDER, Config, load_config
from stream.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_default_toml_mirrors_code_defaults() -> None:
    cfg = load_config(ROOT / "configs" / "default.toml", env={})
    assert dataclasses.replace(cfg, source="") == Config()


def test_env_overrides_models_dir_and_provider(tmp_path: Path) -> None:
    cfg = load_config(None, env={ENV_MODELS: str(tmp_path), ENV_PROVIDER: "cpu"})
    assert cfg.models_dir() == tmp_path
    assert cfg.runtime.provider == "cpu"


def test_relative_models_dir_is_taken_from_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Config().models_dir() == (tmp_path / "models").resolve()


def test_packaged_data_are_the_top_level_files() -> None:
    from stream.core.data import default_config_path, default_manifest_path, web_dir

    assert default_config_path().read_bytes() == (ROOT / "configs" / "default.toml").read_bytes()
    manifest = (ROOT / "models" / "manifest.toml").read_bytes()
    assert default_manifest_path().read_bytes() == manifest
    assert (web_dir() / "index.html").read_bytes() == (ROOT / "web" / "index.html").read_bytes()
    assert Config().live.web_path() == web_dir().resolve()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[tracking]\nreid_treshold = 0.5\n", "reid_treshold"),
        ("[trackin]\nx = 1\n", "trackin"),
        ("[smoothing]\ntau_s = -1.0\n", "smoothing.tau_s"),
        ("[runtime]\nprovider = 'tpu'\n", "runtime.provider"),
        ("[analyze]\nfps = 'fast'\n", "analyze.fps"),
        ("[detection]\nmax_side = 12.5\n", "detection.max_side"),
        ("[emotion]\nensemble = []\n", "emotion.ensemble"),
        ("[emotion]\nensemble = [{ model = 'x', weight = 0 }]\n", "weight"),
        ("not toml = = 1", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path, env={})


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_replace_validates() -> None:
    with pytest.raises(ConfigError, match=r"analyze\.fps"):
        Config().replace("analyze", fps=0.0)
    with pytest.raises(ConfigError, match="analyze"):
        Config().replace("analyze", speed=1.0)
