"""The transformer from one .safetensors file in Lightricks' layout (pretrained_transformer_model_name_or_path):
whole-checkpoint files of tiny ltx-core models (the reference implementation) load into our diffusers transformer and
give ltx-core's velocities; FP8 files with scales load and train close to the bf16 file; every tensor is accounted
for and every mismatch is refused naming the tensors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltx2core.models import loading
from ltx2core.models.original_keys import PREFIX
from ltx2core.models.single_file import CheckpointFileError
from ltx2core.models.source import ModelSource, resolve_source
from ltx2core.training.lora import LoraSpec, add_lora, lora_state_dict, target_modules
from tests.ltx2core.models.checkpoint_files import lightricks_2_5_folder, original_state, whole_checkpoint
from tests.ltx2core.models.reference_models import (
    reference_audio_vae,
    reference_text,
    reference_transformer,
    reference_vae,
    reference_vocoder,
    velocities,
)
from tests.ltx2core.training.helpers import train_steps

TOLERANCE = 1e-5  # float32, as tests/ltx2core/models/test_reference.py
# Measured: the LoRA update after 3 AdamW steps (lr 1e-2, bf16 autocast) on the FP8 file at cosine 0.978 to the bf16
# file's: one scale per tensor rounds coarser than our per-row FP8 (0.986 to float32, test_fp8.py).
UPDATE_MIN_COSINE = 0.95

# What a whole Lightricks checkpoint holds beside the transformer (one tensor of each, tiny), all ignored here
OTHER_COMPONENTS = ("vae.encoder.conv_in.conv.weight", "vae.per_channel_statistics.mean-of-means",
                    "audio_vae.decoder.conv_in.conv.weight", "vocoder.conv_pre.weight",
                    "text_embedding_projection.video_aggregate_embed.weight",
                    f"{PREFIX}video_embeddings_connector.learnable_registers")


def _as_shipped(transformer: dict[str, torch.Tensor], path: Path, **extra: torch.Tensor) -> Path:
    tensors = {PREFIX + k: v.contiguous() for k, v in transformer.items()}
    tensors |= {key: torch.zeros(2, 2) for key in OTHER_COMPONENTS} | extra
    save_file(tensors, path, metadata={"config": json.dumps({"transformer": {"num_layers": 2}})})
    return path


@pytest.mark.parametrize("release", ["2.0", "2.3"])
def test_a_whole_checkpoint_of_ltx_core_loads_into_the_transformer_and_gives_its_velocities(
    release: str, tiny_of: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = reference_transformer(release)
    path = _as_shipped(reference.state_dict(), tmp_path / f"ltx-{release}.safetensors")
    with caplog.at_level("INFO", logger="ltx2core.models.source"):
        source = resolve_source(tiny_of(release).name_or_path, release, transformer_file=path)
    assert (f"ltx-{release}.safetensors: transformer taken from it; not used (taken from the diffusers model): "
            "audio_vae, connectors, vae, vocoder") in caplog.text
    ours = loading.load_transformer(source, dtype=torch.float32)
    mine, theirs = velocities(reference, ours, release)
    for a, b in zip(mine, theirs, strict=True):
        assert a.shape == b.shape and (a - b).abs().max() <= TOLERANCE * b.abs().max()
    assert not any(p.requires_grad for p in ours.parameters()) and not ours.training


def test_the_file_is_named_by_content_in_the_model_label(tiny_of: Any, tmp_path: Path) -> None:
    weights = reference_transformer("2.3").state_dict()
    first = _as_shipped(weights, tmp_path / "a.safetensors")
    moved = tmp_path / "elsewhere" / "a.safetensors"
    moved.parent.mkdir()
    shutil.copy(first, moved)
    weights["proj_out.bias"] = weights["proj_out.bias"] + 1  # one tensor retrained
    (tmp_path / "changed").mkdir()
    changed = _as_shipped(weights, tmp_path / "changed" / "a.safetensors")
    folder = tiny_of("2.3").name_or_path
    labels = [resolve_source(folder, "2.3", transformer_file=p).label for p in (first, moved, changed)]
    assert labels[0] == labels[1] != labels[2]
    assert "transformer from a.safetensors" in labels[0]


def test_a_file_of_another_release_is_refused_naming_both(tiny_of: Any, tmp_path: Path) -> None:
    path = _as_shipped(reference_transformer("2.3").state_dict(), tmp_path / "ltx-2.3-22b-dev.safetensors")
    with pytest.raises(CheckpointFileError, match=r"ltx-2.3-22b-dev.safetensors holds an LTX-2.3 transformer but "
                                                   r"model_flavour is '2.0': set model_flavour to '2.3'"):
        resolve_source(tiny_of("2.0").name_or_path, "2.0", transformer_file=path)


@pytest.mark.parametrize(("change", "message"), [
    ("drop", r"0 unknown tensors \[\], 1 parameters not in it \['proj_out.bias'\]"),
    ("extra", r"1 unknown tensors \['model.diffusion_model.lora_unet_stray.weight'\]"),
    ("shape", r"1 tensors have other shapes than the transformer's config: \['model.diffusion_model."
              r"proj_out.bias \[9\] \(expected \[8\]\)'\]"),
    ("scale", r"1 FP8 scales belong to no weight: \['model.diffusion_model.nowhere.weight_scale'\]"),
])
def test_a_file_that_does_not_fit_is_refused_naming_the_tensors(
    change: str, message: str, tiny_of: Any, tmp_path: Path
) -> None:
    weights = reference_transformer("2.3").state_dict()
    extra = {}
    if change == "drop":
        del weights["proj_out.bias"]
    elif change == "extra":
        extra[f"{PREFIX}lora_unet_stray.weight"] = torch.zeros(1)
    elif change == "shape":
        weights["proj_out.bias"] = torch.zeros(9)
    else:
        extra[f"{PREFIX}nowhere.weight_scale"] = torch.ones(())
    path = _as_shipped(weights, tmp_path / "file.safetensors", **extra)
    source = resolve_source(tiny_of("2.3").name_or_path, "2.3", transformer_file=path)
    with pytest.raises(CheckpointFileError, match=message):
        loading.load_transformer(source, dtype=torch.float32)


@pytest.mark.parametrize("path", ["missing.safetensors", "folder", "notes.txt"])
def test_something_other_than_a_safetensors_file_is_refused_saying_what_to_name(path: str, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"is not a \.safetensors file: name a single checkpoint file"):
        resolve_source("tiny", "2.0", transformer_file=tmp_path / path)


def _fp8_file(weights: dict[str, torch.Tensor], path: Path) -> Path:
    """As Lightricks' FP8 files and ComfyUI's scaled-FP8 files hold them: the block Linear weights in
    float8_e4m3fn with one float32 `weight_scale` (weight = fp8 * scale) and an `input_scale` each, a marker."""
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if key.startswith("transformer_blocks.") and key.endswith(".weight") and value.dim() == 2:
            scale = value.abs().max().float() / torch.finfo(torch.float8_e4m3fn).max
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key.removesuffix("weight") + "weight_scale"] = scale
            out[key.removesuffix("weight") + "input_scale"] = torch.ones(())
        else:
            out[key] = value.to(torch.bfloat16)
    return _as_shipped(out, path, scaled_fp8=torch.zeros(0, dtype=torch.float8_e4m3fn))


def test_an_fp8_file_with_scales_loads_its_weights_and_trains_close_to_the_bf16_file(
    tiny: ModelSource, tmp_path: Path
) -> None:
    from safetensors import safe_open

    connectors = loading.load_connectors(tiny, dtype=torch.float32)

    weights = to_original_state(loading.load_transformer(tiny, dtype=torch.float32))
    bf16_file = _as_shipped({k: v.to(torch.bfloat16) for k, v in weights.items()}, tmp_path / "bf16.safetensors")
    fp8_file = _fp8_file(weights, tmp_path / "fp8.safetensors")

    fp8_model = loading.load_transformer(resolve_source(tiny.name_or_path, "2.0", transformer_file=fp8_file),
                                         dtype=torch.float32)
    key = "transformer_blocks.0.attn1.to_q.weight"
    with safe_open(str(fp8_file), "pt") as handle:
        stored, scale = handle.get_tensor(PREFIX + key), handle.get_tensor(PREFIX + key + "_scale")
    assert stored.dtype == torch.float8_e4m3fn
    assert torch.equal(fp8_model.get_parameter(key), stored.float() * scale)  # fp8 * scale, nothing else

    def trained(path: Path) -> dict[str, torch.Tensor]:
        model = loading.load_transformer(resolve_source(tiny.name_or_path, "2.0", transformer_file=path),
                                         dtype=torch.float32)
        add_lora(model, LoraSpec(4, 4, 0.0, tuple(target_modules(None, with_audio=True))), seed=0)
        return train_steps(model, connectors, tiny.text_max_length, tmp_path / path.stem, mixed_precision="bf16")

    initial = lora_state_dict(add_lora_to(tiny))
    bf16, fp8 = trained(bf16_file), trained(fp8_file)
    bf16_update = torch.cat([(bf16[k] - initial[k]).flatten() for k in initial])
    fp8_update = torch.cat([(fp8[k] - initial[k]).flatten() for k in initial])
    cosine = torch.nn.functional.cosine_similarity(bf16_update, fp8_update, dim=0)
    assert UPDATE_MIN_COSINE < cosine < 1, float(cosine)


def to_original_state(model: Any) -> dict[str, torch.Tensor]:
    """The transformer's weights under Lightricks' names, without the prefix (_as_shipped adds it)."""
    return {k.removeprefix(PREFIX): v for k, v in original_state("transformer", model).items()}


def add_lora_to(tiny: ModelSource) -> Any:
    model = loading.load_transformer(tiny, dtype=torch.float32)
    add_lora(model, LoraSpec(4, 4, 0.0, tuple(target_modules(None, with_audio=True))), seed=0)
    return model


def test_with_fp8_base_precision_an_fp8_file_keeps_its_values_and_scales_and_trains(
    tiny: ModelSource, tmp_path: Path
) -> None:
    """`base_model_precision: fp8-e4m3fn` on an FP8 file: the block weights go from the file into Fp8Linear as they
    are (no bf16 copy on the way: until then each is a 2-byte stand-in), and the LoRA trains close to the bf16
    file's run."""
    from safetensors import safe_open

    from ltx2core.training.assemble import ModelSettings, assemble_training_model
    from ltx2core.training.fp8 import Fp8Linear

    weights = to_original_state(loading.load_transformer(tiny, dtype=torch.float32))
    fp8_file = _fp8_file(weights, tmp_path / "fp8.safetensors")
    source = resolve_source(tiny.name_or_path, "2.0", transformer_file=fp8_file)
    loaded = loading.load_transformer(source, dtype=torch.float32, keep_fp8=True)
    key = "transformer_blocks.1.attn2.to_v.weight"
    assert loaded.get_parameter(key).untyped_storage().nbytes() <= 4  # a stand-in, not the weight

    lora = LoraSpec(4, 4, 0.0, tuple(target_modules(None, with_audio=True)))
    model = assemble_training_model(source, ModelSettings(lora=lora, seed=0, base_precision="fp8-e4m3fn",
                                                          with_audio=True),
                                    device=torch.device("cpu"), dtype=torch.float32)
    layers = [m for m in model.transformer.transformer_blocks.modules() if isinstance(m, Fp8Linear)]
    assert layers and not [m for m in model.transformer.transformer_blocks.modules() if type(m) is torch.nn.Linear
                           and not m.weight.requires_grad]
    layer = model.transformer.get_submodule(key.removesuffix(".weight")).base_layer
    with safe_open(str(fp8_file), "pt") as handle:
        stored, scale = handle.get_tensor(PREFIX + key), handle.get_tensor(PREFIX + key + "_scale")
    assert torch.equal(layer.weight.view(torch.uint8), stored.view(torch.uint8))
    assert torch.equal(layer.scale, scale.expand(stored.shape[0]))

    initial = lora_state_dict(model.transformer)
    fp8 = train_steps(model.transformer, model.connectors, tiny.text_max_length, tmp_path / "fp8",
                      mixed_precision="bf16")
    bf16_file = _as_shipped({k: v.to(torch.bfloat16) for k, v in weights.items()}, tmp_path / "bf16.safetensors")
    bf16_model = loading.load_transformer(resolve_source(tiny.name_or_path, "2.0", transformer_file=bf16_file),
                                          dtype=torch.float32)
    add_lora(bf16_model, lora, seed=0)
    bf16 = train_steps(bf16_model, model.connectors, tiny.text_max_length, tmp_path / "bf16", mixed_precision="bf16")
    cosine = torch.nn.functional.cosine_similarity(
        torch.cat([(fp8[k] - initial[k]).flatten() for k in initial]),
        torch.cat([(bf16[k] - initial[k]).flatten() for k in initial]), dim=0)
    assert UPDATE_MIN_COSINE < cosine < 1, float(cosine)


@pytest.mark.parametrize("release", ["2.0", "2.3"])
def test_a_whole_checkpoint_supplies_its_components_with_the_folder_s_fingerprints(
    release: str, tiny_of: Any, tmp_path: Path
) -> None:
    from ltx2core.config.train import TrainConfig
    from ltx2core.keys import latent_model, text_model
    from ltx2core.models.fingerprint import component_fingerprint

    folder = tiny_of(release)
    path = whole_checkpoint(folder, tmp_path / "whole.safetensors")
    source = resolve_source(str(path), release, text_encoder_path=folder.name_or_path)
    components = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "scheduler")
    assert {c: source.file_of(c) for c in components} == {
        "transformer": path, "connectors": path, "vae": path, "audio_vae": path, "vocoder": path, "scheduler": None}
    for load in (loading.load_transformer, loading.load_connectors, loading.load_vae, loading.load_audio_vae,
                 loading.load_vocoder):
        ours, theirs = load(source, dtype=torch.float32).state_dict(), load(folder, dtype=torch.float32).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for component in ("transformer", "connectors", "vae", "audio_vae", "vocoder", "tokenizer"):
        assert component_fingerprint(source, component) == component_fingerprint(folder, component)
    assert text_model(source) == text_model(folder)
    plain = TrainConfig.model_validate({"output_dir": "out"})
    assert latent_model(source, plain) == latent_model(folder, plain)

    vae = loading.load_vae(folder, dtype=torch.float32)  # one VAE tensor retrained: the VAE's key alone changes
    vae.latents_std.add_(1)
    changed = tmp_path / "changed.safetensors"
    save_file({k: v.contiguous() for k, v in (load_file(path) | original_state("vae", vae)).items()}, changed)
    other = resolve_source(str(changed), release, text_encoder_path=folder.name_or_path)
    assert component_fingerprint(other, "vae") != component_fingerprint(source, "vae")
    assert component_fingerprint(other, "connectors") == component_fingerprint(source, "connectors")


def test_a_vae_tensor_no_rule_explains_is_refused_naming_it(tiny: ModelSource, tmp_path: Path) -> None:
    path = whole_checkpoint(tiny, tmp_path / "whole.safetensors")
    save_file(load_file(path) | {"vae.decoder.up_blocks.9.conv.weight": torch.zeros(1)}, path)
    source = resolve_source(str(path), "2.0", text_encoder_path=tiny.name_or_path)
    with pytest.raises(CheckpointFileError, match=r"whole.safetensors does not fit the vae: 1 unknown tensors "
                                                  r"\['vae.decoder.up_blocks.9.conv.weight'\]"):
        loading.load_vae(source, dtype=torch.float32)


def test_text_encoder_path_beside_a_diffusers_model_is_refused(tiny: ModelSource) -> None:
    with pytest.raises(ValueError, match="text_encoder_path is read only when pretrained_model_name_or_path is a "
                                         r"\.safetensors file"):
        resolve_source(tiny.name_or_path, "2.0", text_encoder_path=tiny.name_or_path)


@pytest.mark.parametrize("release", ["2.0", "2.3"])
def test_the_connectors_of_an_ltx_core_checkpoint_give_its_text_embeddings(
    release: str, tiny_of: Any, tmp_path: Path
) -> None:
    """ltx-core's text path with its own random weights, saved under the names its loader reads from a checkpoint
    (the inverse of ltx-core's EMBEDDINGS_PROCESSOR_KEY_OPS), read back by our loader: our cache and expansion give
    ltx-core's video and audio text embeddings (float32)."""
    from ltx2core.models.text import encode_captions, expand_for_transformer

    folder = tiny_of(release)
    reference = reference_text(loading.load_connectors(folder, dtype=torch.float32))
    generator = torch.Generator().manual_seed(11)
    for param in reference.parameters():
        param.data = torch.randn(param.shape, generator=generator) * 0.3
    as_shipped = {"feature_extractor.": "text_embedding_projection.",
                  "video_connector.": f"{PREFIX}video_embeddings_connector.",
                  "audio_connector.": f"{PREFIX}audio_embeddings_connector."}
    tensors = {next(v + k.removeprefix(p) for p, v in as_shipped.items() if k.startswith(p)): t.contiguous()
               for k, t in reference.state_dict().items()}
    path = tmp_path / f"ltx-{release}.safetensors"
    save_file(tensors, path)
    source = resolve_source(str(path), release, text_encoder_path=folder.name_or_path)
    connectors = loading.load_connectors(source, dtype=torch.float32)
    tokenizer, encoder = loading.load_tokenizer(source), loading.load_text_encoder(source, dtype=torch.float32)
    length = source.text_max_length
    tokens = tokenizer(["a robot dancing"], padding="max_length", max_length=length, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model.language_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                                              output_hidden_states=True).hidden_states
        theirs = reference.process_hidden_states(hidden, tokens["attention_mask"])
    cached = encode_captions(["a robot dancing"], tokenizer=tokenizer, text_encoder=encoder, connectors=connectors,
                             max_length=length, device="cpu", dtype=torch.float32, bucketed=False)
    video, audio, _ = expand_for_transformer(cached, max_length=length, connectors=connectors, device="cpu",
                                             dtype=torch.float32)
    for ours, expected in ((video, theirs.video_encoding), (audio, theirs.audio_encoding)):
        assert ours.shape == expected.shape and (ours - expected).abs().max() <= TOLERANCE * expected.abs().max()


@pytest.mark.parametrize("release", ["2.0", "2.3"])
def test_the_video_vae_of_an_ltx_core_checkpoint_encodes_and_decodes_as_ltx_core(
    release: str, tiny_of: Any, tmp_path: Path
) -> None:
    """ltx-core's video encoder and decoder (random weights), saved under the names its loader reads from a
    checkpoint (`vae.encoder.`, `vae.decoder.`, `vae.per_channel_statistics.`), read back by our loader: our
    normalised latents and decoded pixels are ltx-core's (float32)."""
    from ltx2core.models.vae import decode_video, encode_video

    encoder, decoder = reference_vae(release)
    tensors = {}
    for part, module in (("encoder", encoder), ("decoder", decoder)):
        for key, value in module.state_dict().items():
            statistics = key.startswith("per_channel_statistics.")
            tensors["vae." + (key if statistics else f"{part}.{key}")] = value.contiguous()
    path = tmp_path / f"ltx-{release}.safetensors"
    save_file(tensors, path)
    folder = tiny_of(release)
    vae = loading.load_vae(resolve_source(str(path), release, text_encoder_path=folder.name_or_path),
                           dtype=torch.float32)

    pixels = torch.rand(1, 3, 9, 64, 96, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        theirs = encoder(pixels)
        ours = encode_video(vae, pixels).latents
        assert ours.shape == theirs.shape and (ours - theirs).abs().max() <= TOLERANCE * theirs.abs().max()
        decoded, expected = decode_video(vae, theirs), decoder(theirs).clamp(-1, 1)
    assert decoded.shape == expected.shape and (decoded - expected).abs().max() <= 1e-4
    assert 0.05 < expected.abs().mean() < 0.95  # a real picture, not a saturated one


def test_the_audio_vae_of_an_ltx_core_checkpoint_encodes_and_decodes_as_ltx_core(tiny_of: Any, tmp_path: Path) -> None:
    """ltx-core's audio encoder and decoder (random weights) saved as `audio_vae.*` of a checkpoint, read back by our
    loader: the same normalised latents from a mel spectrogram, and the same spectrogram back (float32)."""
    encoder, decoder = reference_audio_vae()
    tensors = {}
    for part, module in (("encoder", encoder), ("decoder", decoder)):
        for key, value in module.state_dict().items():
            statistics = key.startswith("per_channel_statistics.")
            tensors["audio_vae." + (key if statistics else f"{part}.{key}")] = value.contiguous()
    path = tmp_path / "ltx-2.3.safetensors"
    save_file(tensors, path)
    folder = tiny_of("2.3")
    vae = loading.load_audio_vae(resolve_source(str(path), "2.3", text_encoder_path=folder.name_or_path),
                                 dtype=torch.float32)

    mel = torch.randn(1, 2, 16, 8, generator=torch.Generator().manual_seed(4))  # [B, channels, frames, mel bins]
    with torch.no_grad():
        theirs = encoder(mel)  # normalised, [B, C, T, M]
        raw = vae.encode(mel).latent_dist.mode()
        tokens = raw.transpose(1, 2).flatten(2, 3)  # as encode_audio packs them
        ours = (tokens - vae.latents_mean) / vae.latents_std
        expected = theirs.transpose(1, 2).flatten(2, 3)
        assert ours.shape == expected.shape and (ours - expected).abs().max() <= TOLERANCE * expected.abs().max()
        spectrogram, reference = vae.decode(raw).sample, decoder(theirs)
    assert spectrogram.shape == reference.shape
    assert (spectrogram - reference).abs().max() <= TOLERANCE * reference.abs().max()


@pytest.mark.parametrize("release", ["2.0", "2.3"])
def test_the_vocoder_of_an_ltx_core_checkpoint_gives_its_waveform(release: str, tiny_of: Any, tmp_path: Path) -> None:
    """ltx-core's vocoder (2.3: with the bandwidth extension) saved as `vocoder.*` of a checkpoint, read back by our
    loader into the diffusers vocoder: the same waveform from the same mel spectrogram (float32). ltx-core's input
    is fixed at 2 x 64 mel bins, so the configs come from a copy of the tiny model with that vocoder input."""
    reference = reference_vocoder(release)
    path = tmp_path / f"ltx-{release}.safetensors"
    save_file({"vocoder." + k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    base = tmp_path / "base"
    shutil.copytree(tiny_of(release).name_or_path, base)
    config_path = base / "vocoder" / "config.json"
    config = json.loads(config_path.read_text()) | {"in_channels": 128}
    if release != "2.0":
        config |= {"bwe_in_channels": 128, "num_mel_channels": 64, "hidden_channels": 16, "bwe_hidden_channels": 16}
    config_path.write_text(json.dumps(config))
    vocoder = loading.load_vocoder(resolve_source(str(path), release, text_encoder_path=str(base)),
                                   dtype=torch.float32)

    mel = torch.randn(1, 2, 12, 64, generator=torch.Generator().manual_seed(8)) * 0.5  # [B, stereo, frames, mel]
    with torch.no_grad():
        ours, theirs = vocoder(mel), reference(mel)
    assert ours.shape == theirs.shape and (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()
    assert theirs.abs().max() > 0.05


@pytest.mark.parametrize("flavour", ["2.5", "2.5-distilled"])
def test_a_folder_of_lightricks_per_component_files_supplies_each_component_from_its_file(
    flavour: str, tiny_of: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ltx2core.models.fingerprint import component_fingerprint

    diffusers = tiny_of(flavour)
    folder = lightricks_2_5_folder(tiny_of("2.5"), tiny_of("2.5-distilled"), tmp_path / "LTX-2.5")
    with caplog.at_level("INFO", logger="ltx2core.models.source"):
        source = resolve_source(str(folder), flavour, text_encoder_path=diffusers.name_or_path)
    kind = "distilled" if "distilled" in flavour else "dev"
    assert {c: source.file_of(c).name for c in ("transformer", "connectors", "vae", "audio_vae", "vocoder")} == {
        "transformer": f"ltx-2.5-tiny-{kind}-transformer.safetensors",
        "connectors": "gemma4-tiny-with-proj-ltx-2.5.safetensors", "vae": "ltx-2.5-video-vae-conv.safetensors",
        "audio_vae": "ltx-2.5-audio-vae.safetensors", "vocoder": "ltx-2.5-audio-vae.safetensors"}
    assert ("gemma4-tiny-with-proj-ltx-2.5.safetensors: connectors taken from it; not used (taken from the "
            "diffusers model): other") in caplog.text
    for component in ("transformer", "connectors", "vae", "audio_vae", "vocoder"):
        assert component_fingerprint(source, component) == component_fingerprint(diffusers, component)
    ours = loading.load_transformer(source, dtype=torch.float32).state_dict()
    theirs = loading.load_transformer(diffusers, dtype=torch.float32).state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_folder_with_a_component_in_two_files_is_refused_naming_them(tiny_of: Any, tmp_path: Path) -> None:
    folder = lightricks_2_5_folder(tiny_of("2.5"), tiny_of("2.5-distilled"), tmp_path / "LTX-2.5")
    vae = folder / "vae"
    shutil.copy(vae / "ltx-2.5-video-vae-conv.safetensors", vae / "old-video-vae-conv.safetensors")
    with pytest.raises(ValueError, match=r"the vae is in several files \(ltx-2.5-video-vae-conv.safetensors, "
                                         r"old-video-vae-conv.safetensors\): keep one"):
        resolve_source(str(folder), "2.5", text_encoder_path=tiny_of("2.5").name_or_path)


def test_a_text_encoder_file_as_the_model_is_refused_saying_where_it_goes(tiny: ModelSource, tmp_path: Path) -> None:
    path = tmp_path / "gemma-3-12b.safetensors"
    save_file({"language_model.model.embed_tokens.weight": torch.zeros(4, 2)}, path)
    with pytest.raises(CheckpointFileError, match="holds no LTX-2 component .* That goes in text_encoder_path"):
        resolve_source(str(path), "2.0", text_encoder_path=tiny.name_or_path)
    with pytest.raises(FileNotFoundError, match="text_encoder_path .* has no model_index.json: .* a plain Gemma"):
        resolve_source(str(path), "2.0", text_encoder_path=str(tmp_path))
