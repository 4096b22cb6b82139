"""LTX-2 with random weights drawn at load time: a folder of configs and nothing else.

`pretrained_model_name_or_path: "random"` is the full-size model of the flavour (ltx2core/models/full_size.py),
`"tiny-random"` the tiny one's sizes (tiny.py). The folder holds each component's config, the tokenizer and the
scheduler, never weights: the loaders build each component from its config with its own initialisation, in the
dtype asked and straight on the device asked (a 19 B transformer on the GPU costs seconds and no host copy). So
`ltx2 rehearse` and the stage benchmarks run every stage at full size on a machine that has downloaded nothing.

The tokenizer is one token per character (the real Gemma tokenizer cannot be shipped): captions are padded to
the model's 1024 tokens either way, so the text encoder does the same work. Weights are drawn from a fixed seed,
but a GPU and a CPU draw different numbers: the caches of this model are keyed by its configs alone, which is
right for what it is for (speed and memory), and its outputs are noise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ltx2core.models import full_size, tiny
from ltx2core.models.flavours import FLAVOURS

log = logging.getLogger(__name__)

Size = Literal["full", "tiny"]
VERSION = 1  # bump when what is written changes: the cached folder name carries it
SEED = 0
RANDOM_KEY = "_ltx2_random_weights"  # in model_index.json: "full" or "tiny"


def size_of_index(model_index: dict[str, Any]) -> Size | None:
    return model_index.get(RANDOM_KEY)


def random_model_dir(flavour: str, size: Size) -> Path:
    """The flavour's configs-only folder, $LTX2_HOME/random-<size>-<flavour>-v<VERSION>, written on first use."""
    home = Path(os.environ.get("LTX2_HOME") or Path.home() / ".cache" / "ltx2").expanduser()
    folder = home / f"random-{size}-{tiny.folder_flavour(flavour)}-v{VERSION}"
    if not (folder / "model_index.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            _write(staging, flavour, size)
            try:
                staging.rename(folder)
            except OSError:  # another process wrote it first: keep theirs, identical
                if not (folder / "model_index.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def draw(cls: type, config: dict[str, Any] | Any, *, dtype: Any, device: Any) -> Any:
    """`cls` (a diffusers model, or a transformers model with its config object) with its own random
    initialisation from `SEED`, created in `dtype` on `device`: no float32 or host copy on the way. A model asked
    for on the CPU of a machine with a GPU has its random numbers drawn there (`fills_on`)."""
    import torch

    device = torch.device(device)
    rng = torch.device("cuda") if device.type == "cpu" and torch.cuda.is_available() else device
    with (torch.random.fork_rng(devices=[rng] if rng.type == "cuda" else []), default_dtype(dtype), device,
          fills_on(rng)):
        torch.manual_seed(SEED)
        if hasattr(cls, "from_config"):  # diffusers
            return cls.from_config(config)
        return cls._from_config(config, dtype=dtype)


@contextmanager
def fills_on(rng_device: Any) -> Iterator[Any]:
    """Inside the block, the in-place random fills that initialisers make (`normal_`, `uniform_`) draw their numbers
    on `rng_device` and copy them into tensors that live elsewhere, a tensor at a time. The CPU draws a full-size
    model at ~0.1 GB/s: Gemma-3-12B alone took minutes on an H100 machine's host (2026-12-07), the GPU takes
    seconds, and each module keeps its own initialisation. Yields the mode; its `elements` counts the fills seen.

    A dispatch mode, not a function mode: `nn.init` and transformers' initialisers wrap the fill in functions of
    their own, and a function mode sees the wrapper but not the fill inside it."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    fills = {aten.normal_.default, aten.uniform_.default}
    rng_device = torch.device(rng_device)

    class FillsOn(TorchDispatchMode):
        elements = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func not in fills:
                return func(*args, **kwargs)
            tensor = args[0]
            self.elements += tensor.numel()
            if tensor.device == rng_device or tensor.is_meta or kwargs.get("generator") is not None:
                return func(*args, **kwargs)
            drawn = torch.empty(tensor.shape, dtype=tensor.dtype, device=rng_device)
            func(drawn, *args[1:], **kwargs)
            return tensor.copy_(drawn)

    with FillsOn() as mode:
        yield mode


@contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """New tensors in `dtype` inside the block (a model built in bf16 never exists in float32)."""
    import torch

    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def _write(folder: Path, flavour: str, size: Size) -> None:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    flavour = tiny.folder_flavour(flavour)
    with torch.device("meta"):  # configs only: nothing is allocated
        models, text_config = _tiny_models(flavour) if size == "tiny" else _full_models(flavour)
    for subfolder, model in models.items():
        model.save_config(folder / subfolder)
    text_config.save_pretrained(folder / "text_encoder")
    FlowMatchEulerDiscreteScheduler(**full_size.scheduler(flavour)).save_config(folder / "scheduler")
    tokenizer_length = tiny.TEXT_MAX_LENGTH if size == "tiny" else full_size.TEXT_MAX_LENGTH
    tiny.char_tokenizer(tokenizer_length).save_pretrained(folder / "tokenizer")
    index = {"_class_name": "LTX2Pipeline", RANDOM_KEY: size, tiny.RELEASE_KEY: FLAVOURS[flavour].release,
             tiny.UNTRAINED_KEY: True, "_ltx2_random_version": VERSION}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    log.info("wrote the %s-size random LTX-%s model's configs to %s", size, flavour, folder)


def _tiny_models(flavour: str) -> tuple[dict[str, Any], Any]:
    """(diffusers models by subfolder, the text encoder's config) of the tiny model."""
    pipeline = tiny.build_tiny_pipeline(flavour)
    names = ("transformer", "vae", "audio_vae", "connectors", "vocoder")
    models = {name: getattr(pipeline, name) for name in names} | tiny.tiny_transformers(flavour)
    return models, pipeline.text_encoder.config


def _full_models(flavour: str) -> tuple[dict[str, Any], Any]:
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder, LTX2VocoderWithBWE

    release = FLAVOURS[flavour].release
    transformer = LTX2VideoTransformer3DModel.from_config(full_size.transformer(flavour))
    models = dict(
        transformer=transformer,
        vae=AutoencoderKLLTX2Video(**full_size.video_vae(flavour)),
        audio_vae=AutoencoderKLLTX2Audio(**full_size.AUDIO_VAE),
        connectors=LTX2TextConnectors(**full_size.connectors(flavour)),
        vocoder=(LTX2Vocoder if release == "2.0" else LTX2VocoderWithBWE)(**full_size.vocoder(flavour)),
    )
    if release == "2.5":  # LTX-2.5-Diffusers: transformer/ distilled, transformer_full/ full, one architecture
        models["transformer_full"] = transformer
    return models, full_size.text_encoder(flavour)
