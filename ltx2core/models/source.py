"""Where the LTX-2 components come from: a hub id, a local diffusers folder, the tiny random model, and checkpoint
files in Lightricks' layout (a whole checkpoint, a transformer file, LTX-2.5's folder of per-component files).

`resolve_source` turns the config's model settings into a `ModelSource` once; the loaders and the fingerprints take
that, so every stage reads the same folders and files. The diffusers model supplies every config and what no file
holds; a file supplies the weights of the components it holds (single_file.py). A folder or file of another release
than the flavour says is refused here, naming both (the hub's are checked when they load).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ltx2core.models import random_weights, tiny
from ltx2core.models.flavours import FLAVOURS, Flavour, canonical, release_of
from ltx2core.models.full_size import TEXT_MAX_LENGTH

log = logging.getLogger(__name__)

TINY_NAME = "tiny"
RANDOM_NAMES: dict[str, random_weights.Size] = {"random": "full", "tiny-random": "tiny"}  # weights drawn at load
Component = Literal[
    "transformer", "vae", "audio_vae", "connectors", "text_encoder", "tokenizer", "scheduler", "vocoder"
]
COMPONENTS: tuple[Component, ...] = (
    "transformer", "vae", "audio_vae", "connectors", "text_encoder", "tokenizer", "scheduler", "vocoder"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    identity: str  # by content (single_file.file_identity)
    components: frozenset[str]  # what is taken from it
    held: frozenset[str]  # what it has tensors of

    def describe(self) -> str:
        taken, unused = ", ".join(sorted(self.components)) or "nothing", ", ".join(sorted(self.held - self.components))
        return f"{self.path.name}: {taken} taken from it" + (
            f"; not used (taken from the diffusers model): {unused}" if unused else "")


@dataclass(frozen=True)
class ModelSource:
    name_or_path: str  # what `from_pretrained` takes: a local folder or a hub repo id
    flavour: Flavour
    is_local: bool
    untrained: bool = False  # random weights: whatever it produces is a smoke test, never a model
    tiny_sized: bool = False  # the tiny model's sizes (captions padded to tiny.TEXT_MAX_LENGTH)
    random_weights: bool = False  # configs only: the loaders draw the weights (random_weights.py)
    cache_dir: Path | None = None  # hub cache; None: huggingface_hub's default (HF_HOME / HF_HUB_CACHE)
    files: tuple[CheckpointFile, ...] = ()  # single .safetensors files some components come from instead

    @property
    def text_max_length(self) -> int:
        return tiny.TEXT_MAX_LENGTH if self.tiny_sized else TEXT_MAX_LENGTH

    def file_of(self, component: str) -> Path | None:
        """The single file `component`'s weights come from, if one does (its config still comes from here)."""
        return next((f.path for f in self.files if component in f.components), None)

    def folder(self, component: str) -> str:
        """The component's subfolder: its own name, but the flavour's for the transformer (2.5: transformer_full)."""
        return self.flavour.transformer_subfolder if component == "transformer" else component

    @property
    def label(self) -> str:
        """How results made with this model should be labelled (and what a checkpoint records it was trained on:
        the format predates 2.3, so that 2.0 runs still resume)."""
        suffix = f", {'tiny' if self.tiny_sized else 'full-size'} random weights: UNTRAINED" if self.untrained else ""
        for file in self.files:  # by content: the same file elsewhere is the same model
            suffix += f", {'+'.join(sorted(file.components))} from {file.path.name} {file.identity[:12]}"
        return f"{self.name_or_path} (LTX-2 flavour {self.flavour.name}{suffix})"


def resolve_source(
    pretrained_model_name_or_path: str | None, model_flavour: str = "2.0", *, cache_dir: Path | None = None,
    transformer_file: str | Path | None = None, text_encoder_path: str | None = None,
) -> ModelSource:
    """Resolve `tiny`, a local diffusers folder, a hub id (the hub is only contacted when a component loads) or a
    single `.safetensors` checkpoint; None means the flavour's own repository.

    A checkpoint file supplies the components it holds of single_file.FROM_FILES; the configs, the tokenizer, the
    text encoder, the scheduler and whatever else come from `text_encoder_path` (a diffusers folder or hub id;
    default: the flavour's repository). `transformer_file`: the transformer alone from that file. Files are checked
    against the flavour here, by their tensor names, before any stage runs.
    """
    flavour = FLAVOURS[canonical(model_flavour)]
    name = pretrained_model_name_or_path or flavour.repo
    if _is_file_setting(name) or _is_component_folder(name):
        base = _diffusers_source(text_encoder_path or flavour.repo, flavour, cache_dir, "text_encoder_path")
        path = Path(name).expanduser()
        files: tuple[CheckpointFile, ...] = (
            _component_files(path, flavour) if path.is_dir() else (
                _checkpoint(path, flavour, "pretrained_model_name_or_path"),))
        if transformer_file is not None:
            files = tuple(replace(f, components=f.components - {"transformer"}) for f in files)
    elif text_encoder_path is not None:
        raise ValueError(f"text_encoder_path is read only when pretrained_model_name_or_path is a .safetensors "
                         f"file or a folder of them; {name} is a diffusers model, which has its own text encoder: "
                         "unset text_encoder_path")
    else:
        base, files = _diffusers_source(name, flavour, cache_dir, "pretrained_model_name_or_path"), ()
    if transformer_file is not None:
        transformer = _checkpoint(Path(transformer_file).expanduser(), flavour,
                                  "pretrained_transformer_model_name_or_path")
        files = (replace(transformer, components=frozenset({"transformer"})), *files)
    for file in files:
        log.info("%s", file.describe())
    return replace(base, files=files) if files else base


def _diffusers_source(name: str, flavour: Flavour, cache_dir: Path | None, setting: str) -> ModelSource:
    if name == TINY_NAME:
        name = str(tiny.tiny_model_dir(flavour.name))
    elif name in RANDOM_NAMES:
        name = str(random_weights.random_model_dir(flavour.name, RANDOM_NAMES[name]))

    folder = Path(name).expanduser()
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(
                f"{setting} {folder} has no model_index.json: point it at a diffusers-layout folder (e.g. a "
                f"{flavour.repo} snapshot) or one written by `ltx2 make-tiny-model DIR`"
                + ("; a plain Gemma folder is not enough here: the diffusers model also brings the tokenizer, "
                   "scheduler and configs" if setting == "text_encoder_path" else ""))
        model_index = json.loads(index.read_text())
        random_size = random_weights.size_of_index(model_index)
        tiny_sized = tiny.is_tiny_index(model_index) or random_size == "tiny"
        untrained = tiny_sized or random_size is not None
        source = ModelSource(str(folder), flavour, is_local=True, untrained=untrained, tiny_sized=tiny_sized,
                             random_weights=random_size is not None)
        found = tiny.release_of_index(model_index) if untrained else release_of(
            component_config(source, "transformer"))
        check_release(source, found)
        return source

    if not _HUB_ID.match(name):
        raise FileNotFoundError(f"{setting} {name!r} is neither an existing folder nor a hub id like {flavour.repo}")
    return ModelSource(name, flavour, is_local=False, cache_dir=cache_dir)


def _is_file_setting(name: str) -> bool:
    return name.endswith(".safetensors") or Path(name).expanduser().is_file()


def _is_component_folder(name: str) -> bool:
    folder = Path(name).expanduser()
    return folder.is_dir() and not (folder / "model_index.json").exists() and any(folder.rglob("*.safetensors"))


def _checkpoint(path: Path, flavour: Flavour, setting: str) -> CheckpointFile:
    from ltx2core.models.single_file import FROM_FILES, CheckpointFileError, components_in, file_identity

    if path.is_dir() or path.suffix != ".safetensors" or not path.is_file():
        raise FileNotFoundError(
            f"{setting} {path} is not a .safetensors file: name a single checkpoint file (Lightricks' or ComfyUI's); "
            "a diffusers folder goes in pretrained_model_name_or_path")
    held = components_in(path)
    if not held & frozenset(FROM_FILES):
        raise CheckpointFileError(f"{setting} {path.name} holds no LTX-2 component (no transformer, VAE, vocoder or "
                                  "text connector tensors): is it a text encoder? That goes in text_encoder_path")
    _check_transformer_file(path, flavour, setting, held)
    return CheckpointFile(path, file_identity(path), held & frozenset(FROM_FILES), held)


def _check_transformer_file(path: Path, flavour: Flavour, setting: str, held: frozenset[str]) -> None:
    """The transformer of a file: of the flavour's release, and no stray tensors beside it (strictness: a file
    that holds the transformer holds nothing we cannot name)."""
    from ltx2core.models.single_file import CheckpointFileError, release_of_file, tensors_of

    if "transformer" not in held:
        return
    if (found := release_of_file(path)) != flavour.release:
        raise CheckpointFileError(
            f"{path.name} holds an LTX-{found} transformer but model_flavour is {flavour.name!r}: set model_flavour "
            f"to {found!r} (or its distilled flavour) or point {setting} at an LTX-{flavour.release} file")
    if stray := tensors_of(path, "other"):
        raise CheckpointFileError(f"{path.name}: {len(stray)} tensors belong to no LTX-2 component: {stray[:5]}")


def _component_files(folder: Path, flavour: Flavour) -> tuple[CheckpointFile, ...]:
    """A folder of per-component files (LTX-2.5's layout: diffusion_models/, vae/, text_encoders/): each component
    from the one file that holds it; the flavour picks between a dev and a distilled transformer, and the
    conv-decoder VAE is preferred to the diffusion-decoder one (ours decodes with convolutions)."""
    from ltx2core.models.single_file import FROM_FILES, components_in, file_identity

    paths = sorted(folder.rglob("*.safetensors"))
    held = {path: components_in(path) for path in paths}
    chosen: dict[Path, set[str]] = {}
    for component in FROM_FILES:
        candidates = [p for p in paths if component in held[p]]
        if component == "transformer" and len(candidates) > 1:
            candidates = [p for p in candidates if ("distilled" in p.name) == flavour.distilled]
        if component == "vae" and len(candidates) > 1:
            candidates = [p for p in candidates if "conv" in p.name] or candidates
        if len(candidates) > 1:
            raise ValueError(f"pretrained_model_name_or_path {folder}: the {component} is in several files "
                             f"({', '.join(p.name for p in candidates)}): keep one of them in the folder")
        if candidates:
            chosen.setdefault(candidates[0], set()).add(component)
    if "transformer" not in {c for cs in chosen.values() for c in cs}:
        raise FileNotFoundError(f"pretrained_model_name_or_path {folder} has no model_index.json and no "
                                f"{flavour.name} transformer file: point it at a diffusers folder, a checkpoint file "
                                "or a folder of Lightricks' per-component files")
    for path, components in chosen.items():
        _check_transformer_file(path, flavour, "pretrained_model_name_or_path", held[path] & frozenset(components))
    return tuple(CheckpointFile(p, file_identity(p), frozenset(cs), held[p]) for p, cs in chosen.items())


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
