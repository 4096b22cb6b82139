"""Components from one `.safetensors` file as Lightricks and ComfyUI ship them.

Lightricks ships LTX-2.3 only as whole-checkpoint files (`ltx-2.3-22b-dev.safetensors`: the transformer under
`model.diffusion_model.`, beside the text connectors, both VAEs and the vocoder), LTX-2.5's transformer as a file of
its own, and FP8 variants holding float8_e4m3fn weights with a `weight_scale` each. `pretrained_model_name_or_path`
may name such a file (its transformer, text connectors, video and audio VAEs and vocoder are read from it) and
`pretrained_transformer_model_name_or_path` a file the transformer alone comes from. Reading a component:

- every tensor of it is accounted for: a parameter (renamed by original_keys.py / checkpoint_keys.py; diffusers
  names are taken as they are), the FP8 scale of one, or a tensor dropped on purpose (listed); an unknown tensor, a
  missing parameter or a shape other than the component's config is an error naming the tensors, never a warning;
- the transformer's release is read from its tensor names (2.3+: prompt AdaLN; 2.5: the keyframe embedding) and a
  file of another release than `model_flavour` is refused naming both (source.py, before any stage runs);
- the tensors are read one at a time from the memory-mapped file straight into the dtype and onto the device asked
  (FP8 ones times their scale), into a model built without weights: no second copy of the model in host memory.
  Renaming at load costs nothing, so nothing is converted ahead or cached.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ltx2core.models.checkpoint_keys import COMPONENT_NAMES, CheckpointFileError, component_of
from ltx2core.models.original_keys import PREFIX, diffusers_name

log = logging.getLogger(__name__)

FROM_FILES = ("transformer", "connectors", "vae", "audio_vae", "vocoder")  # what a whole checkpoint supplies here
SCALE_SUFFIXES = (".weight_scale", ".input_scale")  # FP8 files: the weight's scale; the activations' (unused here)
MARKERS = ("scaled_fp8", f"{PREFIX}scaled_fp8")  # ComfyUI's flag tensor of a scaled-FP8 file
FP8_DTYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
SAMPLED_BYTES = 4096  # per tensor, at its start and end, for the content identity


@dataclass(frozen=True)
class ComponentTensors:
    """Where a component's parameters are in a file."""

    path: Path
    component: str
    names: dict[str, str]  # file tensor -> diffusers parameter
    scales: dict[str, str]  # file weight tensor -> its FP8 scale tensor
    dropped: tuple[str, ...]  # tensors of the component the diffusers model has no place for, on purpose
    fp8: bool

    def describe(self) -> str:
        dropped = f", dropped {list(self.dropped)}" if self.dropped else ""
        return (f"{self.component} from {self.path.name}: {len(self.names)} tensors"
                f"{' in FP8 with scales' if self.fp8 else ''}{dropped}")


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's header and the offset its tensor data starts at."""
    try:
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            return json.loads(handle.read(size)), 8 + size
    except (OSError, ValueError, UnicodeDecodeError, MemoryError) as error:
        raise CheckpointFileError(f"{path} is not a readable .safetensors file ({error}): point the setting at the "
                                  "checkpoint file itself") from None


def _header(path: Path) -> dict[str, Any]:
    return _read_header(path)[0]


def _tensors(path: Path) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in _header(path).items() if k != "__metadata__" and k not in MARKERS}


def tensors_of(path: Path, component: str) -> list[str]:
    """The names of `component`'s tensors in a file (by name: the header only)."""
    return sorted(k for k in _tensors(path) if component_of(k) == component)


def components_in(path: Path) -> frozenset[str]:
    """The components a file holds tensors of (by name: the header only)."""
    return frozenset(component_of(k) for k in _tensors(path))


def release_of_names(names: set[str]) -> str:
    """The release a transformer's diffusers parameter names belong to."""
    if "keyframes_abs_pos_embedding" in names:
        return "2.5"
    return "2.3" if any(n.startswith("prompt_adaln.") for n in names) else "2.0"


def release_of_file(path: Path) -> str:
    """The release of the transformer in a file, from its tensor names alone."""
    return release_of_names({diffusers_name(k) for k in _tensors(path) if component_of(k) == "transformer"})


def _diffusers_names(component: str, keys: list[str]) -> dict[str, str | None]:
    if component == "transformer":
        return {key: diffusers_name(key) for key in keys}
    return COMPONENT_NAMES[component](keys)


def component_names(path: Path, component: str) -> dict[str, str]:
    """file tensor -> diffusers name of `component`'s weights in `path` (unchecked: for fingerprints)."""
    keys = [k for k in _tensors(path) if component_of(k) == component and not k.endswith(SCALE_SUFFIXES)]
    return {k: v for k, v in _diffusers_names(component, keys).items() if v is not None}


def read_component(path: Path, component: str, expected: Mapping[str, tuple[int, ...]]) -> ComponentTensors:
    """Check the tensors of `component` in `path` against a model whose parameters have the `expected` shapes."""
    own = {k: v for k, v in _tensors(path).items() if component_of(k) == component}
    weights = {k: v for k, v in own.items() if not k.endswith(SCALE_SUFFIXES)}
    mapped = _diffusers_names(component, list(weights))
    dropped = tuple(sorted(k for k, v in mapped.items() if v is None))
    names = {k: v for k, v in mapped.items() if v is not None}
    unknown = sorted(k for k, v in names.items() if v not in expected)
    missing = sorted(set(expected) - set(names.values()))
    if unknown or missing:
        raise CheckpointFileError(
            f"{path.name} does not fit the {component}: {len(unknown)} unknown tensors {unknown[:5]}, {len(missing)} "
            f"parameters not in it {missing[:5]}: is model_flavour the checkpoint's release?")
    wrong = [f"{key} {weights[key]['shape']} (expected {list(expected[name])})" for key, name in names.items()
             if tuple(weights[key]["shape"]) != tuple(expected[name])]
    if wrong:
        raise CheckpointFileError(f"{path.name}: {len(wrong)} tensors have other shapes than the {component}'s "
                                  f"config: {wrong[:3]}: is it another model size or release?")
    orphans = [k for k in own if k.endswith(SCALE_SUFFIXES) and k.rsplit(".", 1)[0] + ".weight" not in weights]
    if orphans:
        raise CheckpointFileError(f"{path.name}: {len(orphans)} FP8 scales belong to no weight: {orphans[:3]}")
    scales = {k.removesuffix(".weight_scale") + ".weight": k for k in own if k.endswith(".weight_scale")}
    fp8 = any(weights[k]["dtype"] in FP8_DTYPES for k in names)
    return ComponentTensors(path, component, names, scales, dropped, fp8)


def load_component(path: Path, component: str, cls: type, config: Mapping[str, Any], *, dtype: torch.dtype,
                   device: torch.device | str, keep_fp8: bool = False) -> Any:
    """`cls` of `config` with the weights of `component` in `path`, in `dtype` on `device`.

    `keep_fp8` (the transformer, for `base_model_precision: fp8-e4m3fn`): the FP8 weights of the block Linear layers
    are not upcast; each such Linear holds them as `prequantized` (fp8 weight, float32 scale per row) and a weight
    that is a 2-byte stand-in of the right shape (PEFT reads shapes and dtypes only), until training.fp8's
    apply_fp8_base puts them in place. Nothing computes with the stand-in: apply_fp8_base converts every block
    Linear."""
    from accelerate import init_empty_weights
    from safetensors import safe_open

    with init_empty_weights():  # parameters on the meta device, buffers real (the VAE's statistics)
        model = cls.from_config(dict(config))
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    layout = read_component(Path(path), component, expected)
    state, prequantized = {}, {}
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        for key, name in layout.names.items():
            tensor = handle.get_tensor(key)
            if tensor.dtype in FP8_DTYPES.values():
                scale = handle.get_tensor(layout.scales[key]) if key in layout.scales else None
                if keep_fp8 and tensor.dtype == torch.float8_e4m3fn and _block_linear_weight(name, tensor):
                    rows = tensor.shape[0]
                    row_scale = torch.ones(rows) if scale is None else scale.float().reshape(-1).expand(rows)
                    prequantized[name.removesuffix(".weight")] = (tensor.to(device), row_scale.clone().to(device))
                    tensor = torch.zeros((), dtype=dtype, device=device).expand(tensor.shape)
                else:
                    tensor = _dequantized(tensor, scale, dtype)
            state[name] = tensor.to(device=device, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    for name, weights in prequantized.items():
        model.get_submodule(name).prequantized = weights
    log.info("%s", layout.describe())
    return model


def _block_linear_weight(name: str, tensor: torch.Tensor) -> bool:
    return name.startswith("transformer_blocks.") and name.endswith(".weight") and tensor.dim() == 2


def _dequantized(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """fp8 * scale (one per tensor, or one per output row) in float32, then `dtype`."""
    values = weight.float()
    if scale is not None:
        scale = scale.float()
        values = values * (scale if scale.dim() == 0 else scale.reshape(-1, *([1] * (values.dim() - 1))))
    return values.to(dtype)


def tensor_identities(path: Path, rename: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """Per tensor (under its `rename`d name; only those, when given): a digest of its dtype, shape and the first
    and last bytes of its data. The same weights give the same identities in any file layout (one file, shards,
    Lightricks' names); any retrained or re-quantized tensor changes; hashing all 40 GB would take minutes."""
    stat = path.stat()
    identities = _identities(path.resolve(), stat.st_size, stat.st_mtime_ns)
    if rename is None:
        return dict(identities)
    return {rename[key]: identity for key, identity in identities.items() if key in rename}


@functools.lru_cache(maxsize=64)
def _identities(path: Path, size: int, mtime_ns: int) -> dict[str, bytes]:
    # Cached by the file's size and modification time: every stage resolves the source and keys its caches, and a
    # whole checkpoint is ~8,000 small reads.
    header, start = _read_header(path)
    identities = {}
    with path.open("rb") as handle:
        for key, info in sorted(header.items()):
            if key == "__metadata__":
                continue
            digest = hashlib.sha256(f"{info['dtype']}\0{info['shape']}\0".encode())
            begin, end = info["data_offsets"]
            for at in sorted({begin, max(begin, end - SAMPLED_BYTES)}):
                handle.seek(start + at)
                digest.update(handle.read(min(SAMPLED_BYTES, end - at)))
            identities[key] = digest.digest()
    return identities


def file_identity(path: Path) -> str:
    """A 32-hex-digit identity of a whole file by content (every tensor's identity), not by path."""
    digest = hashlib.sha256()
    for name, identity in sorted(tensor_identities(path).items()):
        digest.update(name.encode() + b"\0" + identity)
    return digest.hexdigest()[:32]
