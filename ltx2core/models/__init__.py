"""LTX-2 model components: sources, loaders, fingerprints, text embeddings and the video VAE.

Names are imported on first use, so `from ltx2core.models.scale import LTX2` (config checks) does not pay
for importing diffusers and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LTX2": "scale",
    "ScaleFactors": "scale",
    "FLAVOURS": "source",
    "Flavour": "source",
    "ModelSource": "source",
    "resolve_source": "source",
    "make_tiny_model": "tiny",
    "tiny_model_dir": "tiny",
    "COMPONENTS": "source",
    "Component": "source",
    "load_transformer": "loading",
    "load_vae": "loading",
    "load_vae_config": "loading",
    "load_audio_vae": "loading",
    "load_connectors": "loading",
    "load_text_encoder": "loading",
    "load_tokenizer": "loading",
    "load_scheduler": "loading",
    "load_vocoder": "loading",
    "on_device": "placement",
    "component_fingerprint": "fingerprint",
    "CaptionEmbedding": "text",
    "encode_captions": "text",
    "expand_for_transformer": "text",
    "VaeOptions": "vae_options",
    "VideoLatents": "vae",
    "encode_video": "vae",
    "decode_video": "vae",
    "encoder_receptive_radius": "vae",
    "patched_causal_convs": "causal_conv",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
