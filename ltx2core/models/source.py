"""Where the LTX-2 components come from: a hub id, a local diffusers folder, or the tiny random model.

`resolve_source` turns the config's `pretrained_model_name_or_path` + `model_flavour` into a `ModelSource`
once; the loaders and the fingerprints take that, so every stage reads the same folder or repo. A folder of
another release than the flavour says is refused here, naming both (the hub's are checked when they load).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ltx2core.models import tiny
from ltx2core.models.flavours import FLAVOURS, Flavour, canonical, release_of

TEXT_MAX_LENGTH = 1024  # tokens every caption is padded to, for every release (the connectors' sequence length)

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
    untrained: bool = False  # the tiny random model: whatever it produces is a smoke test, never a model
    cache_dir: Path | None = None  # hub cache; None: huggingface_hub's default (HF_HOME / HF_HUB_CACHE)
    transformer_file: Path | None = None  # a single .safetensors file the transformer comes from instead
    transformer_identity: str = ""  # that file's content identity (single_file.file_identity)

    @property
    def text_max_length(self) -> int:
        return tiny.TEXT_MAX_LENGTH if self.untrained else TEXT_MAX_LENGTH

    def folder(self, component: str) -> str:
        """The component's subfolder: its own name, but the flavour's for the transformer (2.5: transformer_full)."""
        return self.flavour.transformer_subfolder if component == "transformer" else component

    @property
    def label(self) -> str:
        """How results made with this model should be labelled (and what a checkpoint records it was trained on:
        the format predates 2.3, so that 2.0 runs still resume)."""
        suffix = ", tiny random weights: UNTRAINED" if self.untrained else ""
        if self.transformer_file:  # by content: the same file elsewhere is the same model
            suffix += f", transformer {self.transformer_file.name} {self.transformer_identity[:12]}"
        return f"{self.name_or_path} (LTX-2 flavour {self.flavour.name}{suffix})"


def resolve_source(
    pretrained_model_name_or_path: str | None, model_flavour: str = "2.0", *, cache_dir: Path | None = None,
    transformer_file: str | Path | None = None,
) -> ModelSource:
    """Resolve `tiny`, a local diffusers folder or a hub id (the hub is only contacted when a component loads);
    None means the flavour's own repository. `transformer_file`: the transformer from that single file instead
    (single_file.py), checked here against the flavour by its tensor names.

    `tiny` builds the flavour's tiny model once into $LTX2_HOME (default ~/.cache/ltx2). A folder written by
    `make_tiny_model` is recognised as tiny from its model_index.json.
    """
    flavour = FLAVOURS[canonical(model_flavour)]
    if transformer_file is not None:
        source = resolve_source(pretrained_model_name_or_path, model_flavour, cache_dir=cache_dir)
        return replace(source, **_transformer_file(Path(transformer_file).expanduser(), flavour))
    name = pretrained_model_name_or_path or flavour.repo
    if name == TINY_NAME:
        return ModelSource(str(tiny.tiny_model_dir(flavour.name)), flavour, is_local=True, untrained=True)

    folder = Path(name).expanduser()
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(
                f"pretrained_model_name_or_path {folder} has no model_index.json: point it at a diffusers-layout "
                f"folder (e.g. a {flavour.repo} snapshot) or one written by `ltx2 make-tiny-model DIR`"
            )
        model_index = json.loads(index.read_text())
        untrained = tiny.is_tiny_index(model_index)
        source = ModelSource(str(folder), flavour, is_local=True, untrained=untrained)
        found = tiny.release_of_index(model_index) if untrained else release_of(
            component_config(source, "transformer"))
        check_release(source, found)
        return source

    if not _HUB_ID.match(name):
        raise FileNotFoundError(
            f"pretrained_model_name_or_path {name!r} is neither an existing folder nor a hub id like {flavour.repo}"
        )
    return ModelSource(name, flavour, is_local=False, cache_dir=cache_dir)


def _transformer_file(path: Path, flavour: Flavour) -> dict[str, Any]:
    from ltx2core.models.single_file import TransformerFileError, file_identity, release_of_file

    if path.is_dir() or path.suffix != ".safetensors" or not path.is_file():
        raise FileNotFoundError(
            f"pretrained_transformer_model_name_or_path {path} is not a .safetensors file: name a single checkpoint "
            "file (Lightricks' or ComfyUI's); a diffusers folder goes in pretrained_model_name_or_path")
    found = release_of_file(path)
    if found != flavour.release:
        raise TransformerFileError(
            f"{path.name} holds an LTX-{found} transformer but model_flavour is {flavour.name!r}: set model_flavour "
            f"to {found!r} (or its distilled flavour) or point pretrained_transformer_model_name_or_path at an "
            f"LTX-{flavour.release} file")
    return {"transformer_file": path, "transformer_identity": file_identity(path)}


def check_release(source: ModelSource, found: str) -> None:
    """Refuse a model of another release than `model_flavour` says, naming both."""
    if found != source.flavour.release:
        raise ValueError(
            f"{source.name_or_path} is an LTX-{found} model but model_flavour is {source.flavour.name!r}: set "
            f"model_flavour to {found!r} (or its distilled flavour), or point pretrained_model_name_or_path at an "
            f"LTX-{source.flavour.release} model (e.g. {source.flavour.repo})"
        )


def component_config(source: ModelSource, component: Component) -> dict[str, Any]:
    """`<component>/config.json` alone (no weights, no torch): enough for cache keys and shape rules."""
    folder = source.folder(component)
    if source.is_local:
        path = Path(source.name_or_path) / folder / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {source.name_or_path} is not a complete LTX-{source.flavour.release} model in "
                f"diffusers layout (the {source.flavour.name} flavour reads {folder}/)")
    else:
        from huggingface_hub import hf_hub_download  # honours HF_HUB_OFFLINE and the HF cache

        path = Path(hf_hub_download(source.name_or_path, "config.json", subfolder=folder,
                                    cache_dir=source.cache_dir))
    return json.loads(path.read_text())
