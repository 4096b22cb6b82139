"""Where the LTX-2 components come from: a hub id, a local diffusers folder, or the tiny random model.

`resolve_source` turns the config's `pretrained_model_name_or_path` + `model_flavour` into a `ModelSource`
once; the loaders and the fingerprints take that, so every stage reads the same folder or repo.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ltx2core.models import tiny


@dataclass(frozen=True)
class Flavour:
    name: str
    text_max_length: int  # tokens every caption is padded to; the connectors' sequence length
    untrained: bool  # random weights: whatever it produces is a smoke test, never a model


FLAVOURS: dict[str, Flavour] = {
    # LTX-2.0 (19B transformer, Gemma-3-12B text encoder) in diffusers layout, e.g. Lightricks/LTX-2.
    "2.0": Flavour(name="2.0", text_max_length=1024, untrained=False),
    # Random weights with LTX-2.0's layout and shape rules, small enough for a CPU (see tiny.py).
    "tiny": Flavour(name="tiny", text_max_length=tiny.TEXT_MAX_LENGTH, untrained=True),
}
# 2.3 / 2.5 are not offered: their connectors normalise per token and project per modality, so the
# compact text cache (one shared post-projection feature per token, text.py) does not describe them.
UNSUPPORTED_FLAVOURS = ("2.3", "2.5")

TINY_NAME = "tiny"
Component = Literal[
    "transformer", "vae", "audio_vae", "connectors", "text_encoder", "tokenizer", "scheduler", "vocoder"
]
COMPONENTS: tuple[Component, ...] = (
    "transformer", "vae", "audio_vae", "connectors", "text_encoder", "tokenizer", "scheduler", "vocoder"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    name_or_path: str  # what `from_pretrained` takes: a local folder or a hub repo id
    flavour: Flavour
    is_local: bool
    cache_dir: Path | None = None  # hub cache; None: huggingface_hub's default (HF_HOME / HF_HUB_CACHE)

    @property
    def untrained(self) -> bool:
        return self.flavour.untrained

    @property
    def label(self) -> str:
        """How results made with this model should be labelled."""
        suffix = ", random weights: UNTRAINED" if self.untrained else ""
        return f"{self.name_or_path} (LTX-2 flavour {self.flavour.name}{suffix})"


def resolve_source(
    pretrained_model_name_or_path: str, model_flavour: str = "2.0", *, cache_dir: Path | None = None
) -> ModelSource:
    """Resolve `tiny`, a local diffusers folder or a hub id (the hub is only contacted when a component loads).

    `tiny` builds the tiny model once into $LTX2_HOME (default ~/.cache/ltx2). A folder written by
    `make_tiny_model` is recognised as tiny from its model_index.json, whatever `model_flavour` says.
    """
    if model_flavour not in FLAVOURS:
        unsupported = model_flavour in UNSUPPORTED_FLAVOURS
        why = " (its text connectors differ from 2.0's; not supported yet)" if unsupported else ""
        raise ValueError(f"model_flavour {model_flavour!r}{why}: use one of {', '.join(FLAVOURS)}")
    if pretrained_model_name_or_path == TINY_NAME:
        return ModelSource(str(tiny.tiny_model_dir()), FLAVOURS["tiny"], is_local=True)

    folder = Path(pretrained_model_name_or_path).expanduser()
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(
                f"pretrained_model_name_or_path {folder} has no model_index.json: point it at a diffusers-layout "
                "folder (e.g. a Lightricks/LTX-2 snapshot) or one written by `ltx2 make-tiny-model DIR`"
            )
        if tiny.is_tiny_index(json.loads(index.read_text())):
            return ModelSource(str(folder), FLAVOURS["tiny"], is_local=True)
        if model_flavour == "tiny":
            raise ValueError(
                f"model_flavour tiny but {folder} is not a tiny model: set pretrained_model_name_or_path: tiny"
            )
        return ModelSource(str(folder), FLAVOURS[model_flavour], is_local=True)

    if model_flavour == "tiny":
        raise ValueError("model_flavour tiny needs pretrained_model_name_or_path: tiny (or a make-tiny-model folder)")
    if not _HUB_ID.match(pretrained_model_name_or_path):
        raise FileNotFoundError(
            f"pretrained_model_name_or_path {pretrained_model_name_or_path!r} is neither an existing folder nor a "
            "hub id like Lightricks/LTX-2"
        )
    return ModelSource(pretrained_model_name_or_path, FLAVOURS[model_flavour], is_local=False, cache_dir=cache_dir)


def component_config(source: ModelSource, component: Component) -> dict[str, Any]:
    """`<component>/config.json` alone (no weights, no torch): enough for cache keys and shape rules."""
    if source.is_local:
        path = Path(source.name_or_path) / component / "config.json"
    else:
        from huggingface_hub import hf_hub_download  # honours HF_HUB_OFFLINE and the HF cache

        path = Path(hf_hub_download(source.name_or_path, "config.json", subfolder=component,
                                    cache_dir=source.cache_dir))
    return json.loads(path.read_text())
