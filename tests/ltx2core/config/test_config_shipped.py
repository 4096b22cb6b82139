"""Every JSON file shipped in config/ loads, and each config names its datasets file.

Example configs point at dataset folders that exist only on a user's machine, so each pair is loaded twice
in an empty folder: once with path checks off (to learn which folders it needs), then with those folders
created and the checks on. That exercises the real existence checks instead of skipping them.

Run: .venv/bin/pytest tests/ltx2core/config -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltx2core.config import TextEmbedsDataset, VideoDataset, load_databackend, load_project, load_train_config
from ltx2core.models.scale import LTX2

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted(p.relative_to(REPO) for p in (REPO / "config").rglob("*.json"))
PAIRS = [
    ("config/config.json", "config/multidatabackend.json"),
    ("config/examples/ltx2-lora-768x512.json", "config/examples/multidatabackend-video.json"),
    ("config/examples/simpletuner-quickstart.json", "config/examples/simpletuner-quickstart-multidatabackend.json"),
]


@pytest.mark.parametrize("name", SHIPPED, ids=str)
def test_shipped_file_loads(name: Path) -> None:
    path = REPO / name
    if isinstance(json.loads(path.read_text()), list):
        datasets, _ = load_databackend(path, check_paths=False)
        assert any(isinstance(d, VideoDataset) for d in datasets)
    else:
        load_train_config(path)


def test_every_shipped_file_is_in_a_pair() -> None:
    assert sorted(Path(p) for pair in PAIRS for p in pair) == SHIPPED


@pytest.mark.parametrize(("config_name", "datasets_name"), PAIRS)
def test_config_names_its_datasets_file_from_the_repo_root(
    config_name: str, datasets_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    config, _ = load_train_config(config_name)
    assert config.data_backend_config == REPO / datasets_name


@pytest.mark.parametrize(("config_name", "datasets_name"), PAIRS)
def test_pair_loads_once_its_folders_exist(
    config_name: str, datasets_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _, datasets, _ = load_project(REPO / config_name, REPO / datasets_name, check_paths=False)
    for dataset in datasets:
        if isinstance(dataset, VideoDataset):
            assert dataset.instance_data_dir.is_relative_to(tmp_path)  # relative paths read from the current dir
            dataset.instance_data_dir.mkdir(parents=True, exist_ok=True)
            if dataset.parquet is not None:
                dataset.parquet.path.touch()

    config, datasets, _ = load_project(REPO / config_name, REPO / datasets_name)
    assert sum(isinstance(d, TextEmbedsDataset) and d.default for d in datasets) == 1
    assert LTX2.frames_ok(config.validation_num_video_frames)


def test_demo_is_the_tiny_model_at_64_pixels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "datasets/demo").mkdir(parents=True)
    config, (video, _), _ = load_project(REPO / "config/config.json", REPO / "config/multidatabackend.json")
    assert config.pretrained_model_name_or_path == "tiny"
    assert (config.validation_resolution, config.validation_num_video_frames) == ([(64, 64)], 17)
    assert (video.resolution, video.video.num_frames, video.video.min_frames, video.video.max_frames) == (64, 17, 17, 97)


def test_quickstart_keeps_simpletuner_spelling_and_gets_its_offload_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    raw = json.loads((REPO / "config/examples/simpletuner-quickstart.json").read_text())
    assert any(key.startswith("--") for key in raw) and raw["group_offload_use_stream"] is True
    config, warnings = load_train_config("config/examples/simpletuner-quickstart.json")
    assert config.enable_group_offload and not config.group_offload_use_stream
    assert [w for w in warnings if "group_offload_use_stream turned off" in w] == warnings and len(warnings) == 1
