"""Typed, validated loading of SimpleTuner-style `config.json` and `multidatabackend.json`.

    from ltx2core.config import ConfigError, load_project
    config, datasets, warnings = load_project("config/config.json")
"""

from ltx2core.config.databackend import (
    AudioOptions,
    Dataset,
    ParquetCaptions,
    TextEmbedsDataset,
    VideoDataset,
    VideoOptions,
)
from ltx2core.config.fields import resolve_path
from ltx2core.config.load import (
    ConfigError,
    LoadedConfig,
    LoadedDatasets,
    LoadedProject,
    load_databackend,
    load_project,
    load_train_config,
)
from ltx2core.config.train import TINY_MODEL, TrainConfig, TreadConfig, TreadRoute

__all__ = [
    "TINY_MODEL",
    "AudioOptions",
    "ConfigError",
    "Dataset",
    "LoadedConfig",
    "LoadedDatasets",
    "LoadedProject",
    "ParquetCaptions",
    "TextEmbedsDataset",
    "TrainConfig",
    "TreadConfig",
    "TreadRoute",
    "VideoDataset",
    "VideoOptions",
    "load_databackend",
    "load_project",
    "load_train_config",
    "resolve_path",
]
