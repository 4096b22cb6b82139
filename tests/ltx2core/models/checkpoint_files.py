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


def lightricks_2_5_folder(full: ModelSource, distilled: ModelSource, folder: Path) -> Path:
    """Our tiny 2.5 model as Lightricks ships LTX-2.5: one file per component (diffusion_models/ with the dev and the
    distilled transformer, text_encoders/ with the Gemma-4 weights beside the text projection and connectors, vae/
    with the conv-decoder and diffusion-decoder video VAEs and the audio VAE with its vocoder)."""
    def write(relative: str, tensors: dict[str, torch.Tensor]) -> None:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / relative)

    def state(component: str, source: ModelSource) -> dict[str, torch.Tensor]:
        loaders = {"transformer": loading.load_transformer, "connectors": loading.load_connectors,
                   "vae": loading.load_vae, "audio_vae": loading.load_audio_vae, "vocoder": loading.load_vocoder}
        return original_state(component, loaders[component](source, dtype=torch.float32))

    write("diffusion_models/ltx-2.5-tiny-dev-transformer.safetensors", state("transformer", full))
    write("diffusion_models/ltx-2.5-tiny-distilled-transformer.safetensors", state("transformer", distilled))
    write("text_encoders/gemma4-tiny-with-proj-ltx-2.5.safetensors",
          state("connectors", full) | {"language_model.model.embed_tokens.weight": torch.zeros(4, 2)})
    vae = state("vae", full)
    write("vae/ltx-2.5-video-vae-conv.safetensors", vae)
    encoder = {k: v for k, v in vae.items() if not k.startswith("vae.decoder.")}
    # the diffusion decoder: another decoder, the same encoder
    write("vae/ltx-2.5-video-vae.safetensors", encoder | {"vae.decoder.t_embedder.w": torch.zeros(1)})
    write("vae/ltx-2.5-audio-vae.safetensors", state("audio_vae", full) | state("vocoder", full))
    return folder
