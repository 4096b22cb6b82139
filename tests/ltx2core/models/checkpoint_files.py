"""Our tiny models written as Lightricks' whole-checkpoint files (the layout `ltx-2.3-22b-dev.safetensors` has)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ltx2core.models import checkpoint_keys, loading
from ltx2core.models.original_keys import PREFIX, to_original
from ltx2core.models.source import ModelSource


def original_state(component: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A component's weights under Lightricks' names."""
    state = model.state_dict()
    if component == "transformer":
        return {PREFIX + original: state[name] for name, original in to_original(state).items()}
    return {original: state[name] for name, original in checkpoint_keys.to_original(component, state).items()}


def whole_checkpoint(source: ModelSource, path: Path, *, dtype: torch.dtype = torch.float32,
                     components: tuple[str, ...] = ("transformer", "connectors", "vae", "audio_vae", "vocoder")
                     ) -> Path:
    """The tiny model's `components` in one file, in `dtype`."""
    loaders = {"transformer": loading.load_transformer, "connectors": loading.load_connectors,
               "vae": loading.load_vae, "audio_vae": loading.load_audio_vae, "vocoder": loading.load_vocoder}
    tensors = {}
    for component in components:
        model = loaders[component](source, dtype=dtype)
        tensors |= {k: v.contiguous() for k, v in original_state(component, model).items()}
    save_file(tensors, path)
    return path
