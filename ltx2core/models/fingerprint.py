"""Fingerprints of model components: the part of a cache key that says which weights made a row.

The same fingerprint comes out in every process and on every machine that reads the same files, and it
changes when the component's config or weights change. Text-embeds rows are keyed by the tokenizer, text
encoder and connectors fingerprints; latents rows by the VAE's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from huggingface_hub import HfApi, try_to_load_from_cache
from huggingface_hub import constants as hf_constants

from ltx2core.models.source import COMPONENTS, Component, ModelSource, component_config

log = logging.getLogger(__name__)

SCHEME = "ltx2-fingerprint-v2"  # v2: weights by tensor content, so a checkpoint file and a folder of it agree
HASHED_FILE_BYTES = 64 * 2**20  # other files up to this size are hashed whole (tokenizers), larger by name and size


def component_fingerprint(source: ModelSource, component: Component) -> str:
    """A 32-hex-digit fingerprint of `component` of `source`.

    Local folder: the component's JSON files (bookkeeping keys such as `_diffusers_version` left out), its
    `.safetensors` weights by tensor (name, dtype, shape and sampled bytes: single_file.tensor_identities, whatever
    the sharding) and its other files by name and size, or by content when they are small. A component whose weights
    come from a checkpoint file: its config the same way and the file's tensors of it under their diffusers names, so
    the file and a diffusers folder of the same weights give the same fingerprint. Hub id: the commit the loaders
    will read: asked from the hub when online, else the cached snapshot's; the bare id when neither is known (then
    loading cannot work either).
    """
    from ltx2core.models.single_file import component_names, tensor_identities

    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}: use one of {', '.join(COMPONENTS)}")
    # The release, not the flavour: a release's dev and distilled flavours share one repo's text encoder and VAE
    # (LTX-2.5-Diffusers), and what they share is then cached once. The transformer's folder tells them apart.
    folder_name = source.folder(component)
    digest = hashlib.sha256(f"{SCHEME}\0{source.flavour.release}\0{folder_name}\0".encode())
    tensors: dict[str, bytes] = {}
    if file := source.file_of(component):
        digest.update(b"config.json\0" + _json_identity(component_config(source, component)))
        tensors = tensor_identities(file, component_names(file, component))
    elif source.is_local:
        folder = Path(source.name_or_path) / folder_name
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing: {source.name_or_path} is not a complete LTX-2 model")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.name.endswith(".safetensors"):
                tensors |= tensor_identities(path)
            elif not path.name.endswith(".safetensors.index.json"):  # which shard holds what: not the weights
                digest.update(f"{path.relative_to(folder).as_posix()}\0".encode())
                digest.update(_file_identity(path))
    else:
        commit = _hub_commit(source)
        digest.update(f"{source.name_or_path}\0{commit or 'unresolved'}".encode())
    for name, identity in sorted(tensors.items()):
        digest.update(name.encode() + b"\0" + identity)
    return digest.hexdigest()[:32]


def _json_identity(data: object) -> bytes:
    if isinstance(data, dict):  # re-saving with another library version must not change the key
        data = {k: v for k, v in data.items() if not k.startswith("_") and k != "transformers_version"}
    return json.dumps(data, sort_keys=True).encode()


def _file_identity(path: Path) -> bytes:
    if path.suffix == ".json":
        return _json_identity(json.loads(path.read_text()))
    size = path.stat().st_size
    if size <= HASHED_FILE_BYTES:
        return hashlib.sha256(path.read_bytes()).digest()
    return f"size={size}".encode()


def _hub_commit(source: ModelSource) -> str | None:
    repo = source.name_or_path
    if not hf_constants.HF_HUB_OFFLINE:
        try:  # online, from_pretrained downloads the newest commit: key by that one
            return HfApi().model_info(repo).sha
        except Exception as error:  # noqa: BLE001 - any failure to reach the hub falls back to the cache
            log.warning("could not ask the hub for %s's commit (%s); using the cached snapshot", repo, error)
    cached = try_to_load_from_cache(repo, "model_index.json", cache_dir=source.cache_dir)
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/model_index.json
    return None
