"""Many files: input expansion, per-file outputs and index, a bad file, reruns, workers, Ray."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from stream.cli import main
from stream.core.config import Config
from stream.core.errors import MediaError
from stream.offline.batch import analyze_many, expand_inputs, output_names

from .conftest import MODELS, VIDEO

CLIPS = ("pyfeat_single_face.mp4", "fer_test.mp4")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    shutil.copy(VIDEO / CLIPS[0], d / CLIPS[0])
    shutil.copy(VIDEO / CLIPS[1], d / "sub" / CLIPS[1])
    (d / "broken.mp4").write_bytes(b"not a video at all")
    (d / "notes.md").write_text("not media")
    return d


@pytest.mark.integration
def test_expand_folders_globs_and_list_files(folder: Path, tmp_path: Path) -> None:
    found = expand_inputs([str(folder)])
    assert sorted(p.name for p in found) == sorted(["broken.mp4", *CLIPS])  # notes.md is no media
    assert [p.name for p in expand_inputs([str(folder / "**" / "fer_*.mp4")])] == [CLIPS[1]]
    lst = tmp_path / "files.txt"
    lst.write_text(f"# two clips\n{folder / CLIPS[0]}\nin/sub/{CLIPS[1]}\n\n")
    assert [p.name for p in expand_inputs([str(lst), str(folder / CLIPS[0])])] == list(CLIPS)
    with pytest.raises(MediaError, match="not found"):
        expand_inputs([str(tmp_path / "missing.mp4")])
    with pytest.raises(MediaError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.nothing")])
    same = [Path("a/x.mp4"), Path("b/x.mp4"), Path("c/y.mp4")]
    names = output_names(same)
    assert names[2] == "y" and names[0] != names[1] and names[0].startswith("x-")


@pytest.mark.integration
def test_two_workers_a_bad_file_and_a_rerun(
    folder: Path, tmp_path: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = [str(folder), "--out", str(out), "--workers", "2", "--no-voice", "--no-progress"]
    code = main(["analyze", *args, "--models", str(MODELS)])
    printed = capsys.readouterr()
    assert code == 3, printed  # one file failed: reported, the rest analysed
    assert "1 of 3 files could not be analysed" in printed.err
    index = json.loads((out / "index.json").read_text())
    status = {Path(r["file"]).name: r["status"] for r in index["files"]}
    assert status == {"broken.mp4": "failed", CLIPS[0]: "ok", CLIPS[1]: "ok"}
    for clip in CLIPS:
        stem = Path(clip).stem
        data = json.loads((out / f"{stem}.json").read_text())
        assert data["analysis"]["complete"] and len(data["faces"]) >= 1
        assert (out / f"{stem}.csv").stat().st_size > 0
        assert "<html" in (out / f"{stem}.html").read_text().lower()
    overview = (out / "overview.html").read_text()
    assert all(f"{Path(c).stem}.html" in overview for c in CLIPS) and "broken.mp4" in overview
    assert (out / "index.csv").read_text().count("\n") == 4
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.json") if p.name != "index.json"}
    # A rerun skips the complete outputs and tries the broken file again.
    rows = analyze_many([str(folder)], out, config.replace("audio", enabled=False))
    assert sorted(r.status for r in rows) == ["failed", "skipped", "skipped"]
    assert before == {p: p.stat().st_mtime_ns for p in before}


@pytest.mark.integration
def test_local_ray_cluster(folder: Path, tmp_path: Path, config: Config) -> None:
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    out = tmp_path / "ray-out"
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        rows = analyze_many(
            [str(folder / CLIPS[0]), str(folder / "sub")],
            out,
            config.replace("audio", enabled=False),
            workers=2,
            use_ray=True,
        )
    finally:
        ray.shutdown()
    assert sorted((Path(r.file).name, r.status) for r in rows) == sorted((c, "ok") for c in CLIPS)
    assert all(r.faces >= 1 and r.wall_s > 0 for r in rows)
    assert (out / "overview.html").is_file()
