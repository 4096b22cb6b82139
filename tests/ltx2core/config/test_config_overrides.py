"""Run overrides (the Prefect form's fields, `ltx2 run --resolution ...`) land in the validated config.

Run: .venv/bin/pytest tests/ltx2core/config/test_config_overrides.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ltx2core.config import VideoDataset, load_project
from ltx2core.config.load import ConfigError
from ltx2core.config.overrides import Overrides

REPO = Path(__file__).resolve().parents[3]
CONFIG, DATABACKEND = REPO / "config/config.json", REPO / "config/multidatabackend.json"


def _load(**overrides):
    project = load_project(CONFIG, DATABACKEND, check_paths=False, overrides=Overrides(**overrides))
    return project.config, [d for d in project.datasets if isinstance(d, VideoDataset)]


def test_no_override_keeps_the_files_values() -> None:
    plain = load_project(CONFIG, DATABACKEND, check_paths=False)
    config, videos = _load()
    assert config == plain.config
    assert videos == [d for d in plain.datasets if isinstance(d, VideoDataset)]


def test_overrides_replace_training_and_dataset_values() -> None:
    config, videos = _load(resolution=96, num_frames=25, max_train_steps=2, lora_rank=4, learning_rate=3e-4)
    assert (config.max_train_steps, config.lora_rank, config.learning_rate) == (2, 4, 3e-4)
    assert config.lora_alpha == 4  # unset alpha follows the overridden rank, as it follows the file's
    for d in videos:
        assert d.resolution == 96
        assert d.video.num_frames == 25
        assert d.video.min_frames == 25  # lifted: a 17-frame minimum cannot give a 25-frame clip


def test_a_bad_override_is_reported_as_the_override() -> None:
    with pytest.raises(ConfigError) as error:
        _load(resolution=100, num_frames=24)
    text = str(error.value)
    assert "resolution 100 is not a multiple of 32: use 96 or 128 (this value is the run's override" in text
    assert "video.num_frames 24 is not 8k+1: use 17 or 25 (this value is the run's override" in text
    assert "min_frames" not in text  # not lifted to an invalid count: one message per mistake


def test_unknown_or_nonsense_overrides_are_refused_by_the_model() -> None:
    with pytest.raises(ValidationError, match="learning_rate"):
        Overrides(learning_rate=0)
    with pytest.raises(ValidationError, match="extra"):
        Overrides(lora_alpha=8)
