"""What LTX-2.3 and 2.5 change, each on the tiny model of that release (float32): the loaders pick the release's
classes and folders, another release's model is refused naming both, the compact text cache expands to what the
release's pipeline feeds its transformer, the training forward is called as the pipeline calls it, and the VAE
memory options stay exact on the 2.3 layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import LTX2Pipeline

from ltx2core.models import loading
from ltx2core.models.flavours import FLAVOURS, release_of
from ltx2core.models.source import ModelSource, component_config, resolve_source
from ltx2core.models.text import _project, encode_captions, expand_for_transformer, projection_widths
from ltx2core.models.vae import VaeOptions, encode_video

CAPTIONS = ["a robot dancing in the rain", "hi", "two dogs run along a beach at dusk, the camera follows", ""]
TOLERANCE = 2e-6  # float32 rounding (bucketed lengths, layer-major sums); the padded path is asserted exact-ish
RELEASES = ["2.3", "2.5"]


def _text(source: ModelSource) -> dict[str, Any]:
    return dict(tokenizer=loading.load_tokenizer(source),
                text_encoder=loading.load_text_encoder(source, dtype=torch.float32),
                connectors=loading.load_connectors(source, dtype=torch.float32))


@pytest.mark.parametrize("release", RELEASES)
def test_the_release_s_components_load_with_its_classes(tiny_of, release: str) -> None:
    from diffusers.pipelines.ltx2 import LTX2VocoderWithBWE
    from transformers import Gemma3ForConditionalGeneration, Gemma4UnifiedForConditionalGeneration

    source = tiny_of(release)
    transformer = loading.load_transformer(source, dtype=torch.float32)
    assert release_of(dict(transformer.config)) == release and transformer.config.gated_attn
    assert not hasattr(transformer, "caption_projection") or transformer.caption_projection is None
    vocoder = loading.load_vocoder(source, dtype=torch.float32)
    assert isinstance(vocoder, LTX2VocoderWithBWE) and vocoder.config.output_sampling_rate == 48000
    encoder = loading.load_text_encoder(source, dtype=torch.float32)
    expected = Gemma4UnifiedForConditionalGeneration if release == "2.5" else Gemma3ForConditionalGeneration
    assert type(encoder) is expected
    assert loading.load_connectors(source, dtype=torch.float32).config.per_modality_projections


def test_2_5_trains_transformer_full_and_samples_it_with_the_dev_shift(tiny_of) -> None:
    full, distilled = tiny_of("2.5"), tiny_of("2.5-distilled")
    a = loading.load_transformer(full, dtype=torch.float32).state_dict()
    b = loading.load_transformer(distilled, dtype=torch.float32).state_dict()
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)  # two transformers, one folder
    assert (Path(full.name_or_path) / "transformer_full").is_dir()  # both in one folder, as LTX-2.5-Diffusers
    assert loading.load_scheduler(full).config.use_dynamic_shifting  # the repo's scheduler is the distilled one
    assert not loading.load_scheduler(distilled).config.use_dynamic_shifting


@pytest.mark.parametrize(("release", "flavour"), [("2.0", "2.3"), ("2.3", "2.0"), ("2.5", "2.3-distilled")])
def test_a_model_of_another_release_is_refused_naming_both(tiny_of, release: str, flavour: str,
                                                           tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"is an LTX-{release} model but model_flavour is '{flavour}'"):
        resolve_source(tiny_of(release).name_or_path, flavour)
    # A real (not tiny) folder: told apart by its transformer config
    folder = tmp_path / "model"
    shutil.copytree(tiny_of(release).name_or_path, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({k: v for k, v in index.items() if not k.startswith("_ltx2")}))
    assert not resolve_source(str(folder), release).untrained
    with pytest.raises(ValueError, match=f"is an LTX-{release} model but model_flavour is '{flavour}'"):
        resolve_source(str(folder), flavour)


@pytest.mark.parametrize("release", RELEASES)
def test_cached_text_expands_to_what_the_release_s_pipeline_feeds_the_transformer(tiny_of, release: str) -> None:
    source = tiny_of(release)
    text, length = _text(source), source.text_max_length
    pipe = LTX2Pipeline(scheduler=None, vae=None, audio_vae=None, transformer=None, vocoder=None, **text)
    with torch.no_grad():
        embeds, mask, _, _ = pipe.encode_prompt(CAPTIONS, do_classifier_free_guidance=False,
                                                max_sequence_length=length, device="cpu")
        expected = text["connectors"](embeds, mask, padding_side="left")
    connectors = text["connectors"]
    width = connectors.config.video_hidden_dim + connectors.config.audio_hidden_dim
    for bucketed, tolerance in ((False, 1e-6), (True, TOLERANCE)):
        cached = encode_captions(CAPTIONS, max_length=length, device="cpu", dtype=torch.float32, bucketed=bucketed,
                                 batch_size=2, **text)
        assert {c.features.shape[1] for c in cached} == {width}  # video then audio projection, real tokens only
        found = expand_for_transformer(cached, max_length=length, connectors=connectors, device="cpu",
                                       dtype=torch.float32)
        assert torch.equal(found[2], expected[2])
        for ours, theirs in zip(found[:2], expected[:2], strict=True):
            assert ours.shape == theirs.shape and (ours - theirs).abs().max() <= tolerance
    assert expected[0].shape[-1] == connectors.config.video_hidden_dim != expected[1].shape[-1]


@pytest.mark.parametrize("release", RELEASES)
def test_the_layer_major_cuda_layout_gives_the_same_per_modality_features(tiny_of, release: str) -> None:
    text = _text(tiny_of(release))
    tokens = text["tokenizer"](CAPTIONS, truncation=True, max_length=64)["input_ids"]
    args = (tokens, 64, 64, text["tokenizer"].pad_token_id, text["text_encoder"], text["connectors"], "cpu")
    for a, b in zip(_project(*args), _project(*args, layer_major=True, norm_tokens=64), strict=True):
        assert (a - b).abs().max() <= TOLERANCE


@pytest.mark.parametrize("flavour", ["2.0", "2.3", "2.5"])
def test_the_training_forward_is_called_as_the_flavour_s_pipeline_calls_it(tiny_of, flavour: str) -> None:
    """The kwargs LTX2Pipeline gives the transformer (captured) and those of our training step agree on
    everything the flavour decides: sigma (the scaled timestep), use_cross_timestep; and a forward with ours on
    the pipeline's inputs gives the pipeline's prediction."""
    from ltx2core.training.data import TrainExample, collate
    from ltx2core.training.step import model_inputs

    source = tiny_of(flavour)
    components = {name: getattr(loading, f"load_{name}")(source, dtype=torch.float32)
                  for name in ("transformer", "vae", "audio_vae", "connectors", "text_encoder", "vocoder")}
    pipe = LTX2Pipeline(scheduler=loading.load_scheduler(source), tokenizer=loading.load_tokenizer(source),
                        **components)
    seen: list[dict[str, Any]] = []
    handle = pipe.transformer.register_forward_hook(
        lambda module, args, kwargs, output: seen.append({**kwargs, "output": output}), with_kwargs=True)
    try:
        pipe(prompt="a cat", width=64, height=64, num_frames=9, num_inference_steps=2, guidance_scale=1.0,
             audio_guidance_scale=1.0, stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0,
             audio_modality_scale=1.0, max_sequence_length=source.text_max_length, output_type="latent",
             use_cross_timestep=FLAVOURS[flavour].use_cross_timestep, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    theirs = seen[0]
    width = sum(projection_widths(components["connectors"]))
    example = TrainExample(key="a", latents=torch.zeros(8, 2, 2, 2), text_features=torch.randn(3, width),
                           frame_rate=25.0, audio_latents=torch.zeros(theirs["audio_hidden_states"].shape[1], 4))
    batch = collate([example], connectors=components["connectors"], text_max_length=source.text_max_length,
                    device="cpu", dtype=torch.float32)
    ours = model_inputs(components["transformer"], batch, generator=torch.Generator().manual_seed(0),
                        cross_timestep=FLAVOURS[flavour].use_cross_timestep).kwargs
    assert ours["use_cross_timestep"] == FLAVOURS[flavour].use_cross_timestep
    assert torch.equal(ours["sigma"], ours["audio_timestep"])  # sigma = the scaled timestep, as the pipeline's
    assert torch.equal(theirs["sigma"].flatten()[:1], theirs["timestep"].flatten()[:1])
    # The pipeline's own inputs through the kwargs our step builds the rest of: the same prediction.
    replay = {**ours, **{k: theirs[k] for k in ("hidden_states", "audio_hidden_states", "encoder_hidden_states",
                                                  "audio_encoder_hidden_states", "encoder_attention_mask",
                                                  "audio_encoder_attention_mask", "timestep", "sigma",
                                                  "video_coords", "audio_coords", "num_frames", "height", "width")},
              "audio_timestep": theirs["timestep"], "audio_num_frames": theirs["audio_hidden_states"].shape[1],
              "isolate_modalities": False}
    with torch.no_grad():
        video, audio = components["transformer"](**replay)
    assert torch.equal(video, theirs["output"][0]) and torch.equal(audio, theirs["output"][1])


@pytest.mark.parametrize("options", [VaeOptions(patch_conv=True, patch_conv_frames=2),
                                     VaeOptions(temporal_roll=True, roll_frames=8), VaeOptions(slicing=True)],
                         ids=["patch_conv", "temporal_roll", "slicing"])
def test_vae_memory_options_stay_exact_on_the_2_3_layout(tiny_of, options: VaeOptions) -> None:
    source = tiny_of("2.3")
    vae = loading.load_vae(source, dtype=torch.float32)
    assert component_config(source, "vae")["upsample_factor"] == [2, 2, 1, 2]  # the 2.3 decoder
    clip = torch.rand(2, 3, 17, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = encode_video(vae, clip).latents
    assert (encode_video(vae, clip, options=options).latents - plain).abs().max() <= TOLERANCE


@pytest.mark.parametrize("flavour", ["2.3", "2.5-distilled"])
def test_image_to_video_training_with_audio_steps_on_the_newer_releases(tiny_of, flavour: str) -> None:
    """First-frame conditioning gives per-token timesteps while sigma (prompt AdaLN) stays per clip."""
    from ltx2core.training.data import TrainExample, collate
    from ltx2core.training.flow_matching import DistilledSigmas
    from ltx2core.training.lora import LoraSpec, add_lora, target_modules
    from ltx2core.training.step import training_step

    source = tiny_of(flavour)
    transformer = loading.load_transformer(source, dtype=torch.float32)
    params = add_lora(transformer, LoraSpec(4, 4, 0.0, tuple(target_modules(None, with_audio=True))), seed=0)
    connectors = loading.load_connectors(source, dtype=torch.float32)
    example = TrainExample(key="a", latents=torch.randn(8, 2, 2, 2), text_features=torch.randn(5, 24),
                           frame_rate=25.0, audio_latents=torch.randn(9, 4))
    batch = collate([example], connectors=connectors, text_max_length=source.text_max_length, device="cpu",
                    dtype=torch.float32)
    output = training_step(transformer, batch, generator=torch.Generator().manual_seed(0), first_frame_p=1.0,
                           sigmas=DistilledSigmas(), cross_timestep=True)
    output.loss.backward()
    assert torch.isfinite(output.loss) and output.audio_loss is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
