"""The transformer from one `.safetensors` file as Lightricks and ComfyUI ship it (`pretrained_transformer_model_name_or_path`).

Lightricks ships LTX-2.3 only as whole-checkpoint files (`ltx-2.3-22b-dev.safetensors`: the transformer under
`model.diffusion_model.`, beside the text connectors, both VAEs and the vocoder), LTX-2.5's transformer as a file of
its own, and FP8 variants holding float8_e4m3fn weights with a `weight_scale` each. Reading one:

- every tensor is accounted for: a transformer parameter (original names renamed by original_keys.py, diffusers
  names taken as they are), the FP8 scale of one, or a tensor of another component, which is listed as ignored
  (those come from `pretrained_model_name_or_path`); anything else, a missing parameter or a shape that differs
  from the flavour's transformer config is an error naming the tensors, never a warning;
- the release is read from the tensor names (2.3+: prompt AdaLN; 2.5: the keyframe embedding) and a file of
  another release than `model_flavour` is refused naming both;
- the tensors are read one at a time from the memory-mapped file straight into the dtype and onto the device asked
  (FP8 ones times their scale), into a model built without weights: no second copy of the model in host memory.
  Renaming at load costs nothing, so nothing is converted ahead or cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ltx2core.models.original_keys import PREFIX, diffusers_name, to_diffusers

log = logging.getLogger(__name__)

# Tensors of the other components in a whole-checkpoint file (ltx-core's key filters name the same prefixes).
OTHER_COMPONENTS = {
    "vae.": "video VAE", "audio_vae.": "audio VAE", "vocoder.": "vocoder",
    "text_embedding_projection.": "text connectors", f"{PREFIX}video_embeddings_connector.": "text connectors",
    f"{PREFIX}audio_embeddings_connector.": "text connectors", f"{PREFIX}embeddings_connector.": "text connectors",
}
SCALE_SUFFIXES = (".weight_scale", ".input_scale")  # FP8 files: the weight's scale; the activations' (unused here)
MARKERS = ("scaled_fp8", f"{PREFIX}scaled_fp8")  # ComfyUI's flag tensor of a scaled-FP8 file
FP8_DTYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
SAMPLED_BYTES = 4096  # per tensor, at its start and end, for the content identity


class TransformerFileError(ValueError):
    """A transformer file that does not fit the flavour's transformer; says which tensors and what to do."""


@dataclass(frozen=True)
class TransformerFile:
    path: Path
    names: dict[str, str]  # file tensor -> diffusers parameter
    scales: dict[str, str]  # file weight tensor -> its FP8 scale tensor
    ignored: dict[str, int]  # other component -> tensors of it in the file
    release: str
    fp8: bool

    def describe(self) -> str:
        others = ", ".join(f"{n} {what}" for what, n in sorted(self.ignored.items()))
        return (f"{self.path.name}: LTX-{self.release} transformer, {len(self.names)} tensors"
                f"{' in FP8 with scales' if self.fp8 else ''}"
                f"{f'; ignored (taken from pretrained_model_name_or_path): {others}' if others else ''}")


def release_of_names(names: set[str]) -> str:
    """The release a transformer's diffusers parameter names belong to."""
    if "keyframes_abs_pos_embedding" in names:
        return "2.5"
    return "2.3" if any(n.startswith("prompt_adaln.") for n in names) else "2.0"


def _header(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return json.loads(handle.read(size))


def release_of_file(path: Path) -> str:
    """The release of the transformer in a file, from its tensor names alone (the header: no weights read)."""
    try:
        keys = [k for k in _header(path) if k != "__metadata__"]
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise TransformerFileError(f"{path} is not a readable .safetensors file ({error}): point "
                                   "pretrained_transformer_model_name_or_path at the checkpoint itself") from None
    return release_of_names({diffusers_name(k) for k in keys if not k.startswith(tuple(OTHER_COMPONENTS))})


def read_transformer_file(path: Path, expected: Mapping[str, tuple[int, ...]]) -> TransformerFile:
    """Check `path` against a transformer whose parameters have the `expected` shapes (module docstring; the
    release was checked by `release_of_file` when the source was resolved)."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_transformer_model_name_or_path {path} does not exist")
    try:
        header = _header(path)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise TransformerFileError(f"{path} is not a readable .safetensors file ({error}): point "
                                   "pretrained_transformer_model_name_or_path at the checkpoint itself") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    ignored: dict[str, int] = {}
    own: dict[str, dict[str, Any]] = {}
    for key, info in tensors.items():
        other = next((what for prefix, what in OTHER_COMPONENTS.items() if key.startswith(prefix)), None)
        if other:
            ignored[other] = ignored.get(other, 0) + 1
        elif key not in MARKERS:
            own[key] = info
    weights = {k: v for k, v in own.items() if not k.endswith(SCALE_SUFFIXES)}
    scales = {k.removesuffix(".weight_scale") + ".weight": k for k in own if k.endswith(".weight_scale")}
    found = release_of_names({diffusers_name(k) for k in weights})
    try:
        names = to_diffusers(weights, expected)
    except ValueError as error:
        raise TransformerFileError(f"{path.name}: {error}") from None
    wrong = [f"{key} {weights[key]['shape']} (expected {list(expected[name])})" for key, name in names.items()
             if tuple(weights[key]["shape"]) != tuple(expected[name])]
    if wrong:
        raise TransformerFileError(f"{path.name}: {len(wrong)} tensors have other shapes than the LTX-{found} "
                                   f"transformer's config: {wrong[:3]}: is it another model size or release?")
    orphans = [k for k in own if k.endswith(SCALE_SUFFIXES) and k.rsplit(".", 1)[0] + ".weight" not in weights]
    if orphans:
        raise TransformerFileError(f"{path.name}: {len(orphans)} FP8 scales belong to no weight: {orphans[:3]}")
    fp8 = any(weights[k]["dtype"] in FP8_DTYPES for k in weights)
    return TransformerFile(path, names, scales, ignored, found, fp8)


def load_transformer_file(path: Path, config: Mapping[str, Any], *, dtype: torch.dtype,
                          device: torch.device | str, keep_fp8: bool = False) -> Any:
    """`LTX2VideoTransformer3DModel` of `config` with the weights of `path`, in `dtype` on `device`.

    `keep_fp8` (for `base_model_precision: fp8-e4m3fn`): the FP8 weights of the block Linear layers are not upcast;
    each such Linear holds them as `prequantized` (fp8 weight, float32 scale per row) and a weight that is a
    2-byte stand-in of the right shape (PEFT reads shapes and dtypes only), until training.fp8.apply_fp8_base puts
    them in place. Nothing computes with the stand-in: apply_fp8_base converts every block Linear."""
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel
    from safetensors import safe_open

    with init_empty_weights():
        model = LTX2VideoTransformer3DModel.from_config(dict(config))
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    layout = read_transformer_file(Path(path), expected)
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
    log.info("transformer from %s", layout.describe())
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


def file_identity(path: Path) -> str:
    """A 32-hex-digit identity of a weights file by content, not path: its header (names, dtypes, shapes, offsets)
    and the first and last bytes of every tensor. Any retrained or re-quantized file changes every tensor; hashing
    all 40 GB would take minutes."""
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header, start = json.loads(handle.read(size)), 8 + size
        digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        for key in sorted(k for k in header if k != "__metadata__"):
            begin, end = header[key]["data_offsets"]
            for at in sorted({begin, max(begin, end - SAMPLED_BYTES)}):
                handle.seek(start + at)
                digest.update(handle.read(min(SAMPLED_BYTES, end - at)))
    return digest.hexdigest()[:32]
