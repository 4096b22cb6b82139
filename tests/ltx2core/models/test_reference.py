"""The diffusers transformer we train against Lightricks' reference model code (ltx-core, PyPI, used as a test
oracle): a tiny ltx-core model of 2.0 and of 2.3 with random weights, its state dict renamed by
ltx2core/models/original_keys.py into diffusers' transformer, gives the same video and audio velocities on the
same inputs (float32), with the flavour's sigma and timestep inputs."""

from __future__ import annotations

import pytest
import torch

from ltx2core.models.original_keys import PREFIX, to_diffusers, to_original
from ltx2core.models.tiny import _transformer
from tests.ltx2core.models.reference_models import reference_text, velocities
from tests.ltx2core.models.reference_models import reference_transformer as _reference

TOLERANCE = 1e-5  # float32; the two implementations order some sums differently


@pytest.mark.parametrize("release", ["2.0", "2.3"])
def test_the_diffusers_transformer_equals_ltx_core_s_on_its_renamed_weights(release: str) -> None:
    reference = _reference(release)
    ours = _transformer(release).eval()
    original = {PREFIX + k: v for k, v in reference.state_dict().items()}  # as a single file names them
    names = to_diffusers(original, ours.state_dict())
    ours.load_state_dict({names[k]: v for k, v in original.items()}, strict=True)
    assert to_original(names.values()) == {v: k.removeprefix(PREFIX) for k, v in names.items()}

    mine, theirs = velocities(reference, ours, release)
    for a, b in zip(mine, theirs, strict=True):
        assert a.shape == b.shape and (a - b).abs().max() <= TOLERANCE * b.abs().max()


def test_a_checkpoint_of_another_release_is_refused_naming_the_keys() -> None:
    reference = {PREFIX + k: v for k, v in _reference("2.3").state_dict().items()}
    with pytest.raises(ValueError, match=r"40 unknown tensors .*prompt_adaln_single.*model_flavour"):
        to_diffusers(reference, _transformer("2.0").state_dict())


def test_the_2_3_text_cache_expands_to_ltx_core_s_text_embeddings(tiny_of) -> None:
    """Our compact per-modality cache + expand_for_transformer against ltx-core's EmbeddingsProcessor on the
    same Gemma hidden states, one caption at a time (ltx-core's connectors take a batch of one)."""
    from ltx2core.models import loading
    from ltx2core.models.text import encode_captions, expand_for_transformer

    source = tiny_of("2.3")
    tokenizer = loading.load_tokenizer(source)
    encoder = loading.load_text_encoder(source, dtype=torch.float32)
    connectors = loading.load_connectors(source, dtype=torch.float32)
    reference = reference_text(connectors)
    length = source.text_max_length
    for caption in ("a robot dancing in the rain", "hi"):
        tokens = tokenizer([caption], padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder.model.language_model(input_ids=tokens["input_ids"],
                                                  attention_mask=tokens["attention_mask"],
                                                  output_hidden_states=True).hidden_states
            theirs = reference.process_hidden_states(hidden, tokens["attention_mask"])
        cached = encode_captions([caption], tokenizer=tokenizer, text_encoder=encoder, connectors=connectors,
                                 max_length=length, device="cpu", dtype=torch.float32, bucketed=False)
        video, audio, mask = expand_for_transformer(cached, max_length=length, connectors=connectors, device="cpu",
                                                    dtype=torch.float32)
        assert torch.equal(mask, theirs.attention_mask)
        for ours, expected in ((video, theirs.video_encoding), (audio, theirs.audio_encoding)):
            assert ours.shape == expected.shape and (ours - expected).abs().max() <= TOLERANCE * expected.abs().max()


def test_our_comfyui_lora_fused_by_ltx_core_gives_our_model_with_the_lora(tmp_path) -> None:
    """A LoRA trained here (random lora_B standing in for training), its ComfyUI file through ltx-core's own LoRA
    fusing (what Lightricks' pipelines do): the same 2.3 transformer output as ours with the adapter, in bf16 (ltx-core
    fuses bf16 and fp8 weights only). Skipped keys would leave the whole LoRA effect as the difference."""
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig
    from ltx_core.loader.fuse_loras import apply_loras
    from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict
    from ltx_core.model.transformer.modality import Modality
    from safetensors.torch import load_file

    from ltx2core.training.lora import COMFY_FILE, COMFY_PREFIX, LoraSpec, add_lora, save_lora, target_modules

    reference = _reference("2.3").to(torch.bfloat16)
    ours = _transformer("2.3").eval()
    original = reference.state_dict()
    names = to_diffusers(original, ours.state_dict())
    ours.load_state_dict({names[k]: v.float() for k, v in original.items()}, strict=True)
    ours.to(torch.bfloat16)
    targets = tuple(target_modules(None, with_audio=True, feed_forward=True))
    params = add_lora(ours, LoraSpec(4, 8, 0.0, targets), seed=0)
    generator = torch.Generator().manual_seed(3)
    for param in params:
        param.data = torch.randn(param.shape, generator=generator) * 0.3
    save_lora(ours, tmp_path, flavour="2.3")
    comfy = {k.removeprefix(COMFY_PREFIX): v.to(torch.bfloat16) for k, v in load_file(tmp_path / COMFY_FILE).items()}
    fused = apply_loras(StateDict(original, torch.device("cpu"), 0, {torch.bfloat16}),
                        [LoraStateDictWithStrength(StateDict(comfy, torch.device("cpu"), 0, {torch.bfloat16}), 1.0)])
    reference.load_state_dict(fused.sd)

    frames, height, width, audio_tokens, text = 2, 2, 3, 5, 7
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(1, frames * height * width, 8, generator=g), torch.randn(1, audio_tokens, 4, generator=g)
    video_text, audio_text = torch.randn(1, text, 16, generator=g), torch.randn(1, text, 8, generator=g)
    sigma = torch.tensor([0.7])
    video_coords = ours.rope.prepare_video_coords(1, frames, height, width, "cpu", fps=25.0)
    audio_coords = ours.audio_rope.prepare_audio_coords(1, audio_tokens, "cpu")
    bf16 = {"dtype": torch.bfloat16}
    with torch.no_grad():
        theirs = reference(
            Modality(latent=video.to(**bf16), sigma=sigma, timesteps=sigma.expand(1, video.shape[1]),
                     positions=video_coords, context=video_text.to(**bf16)),
            Modality(latent=audio.to(**bf16), sigma=sigma, timesteps=sigma.expand(1, audio_tokens),
                     positions=audio_coords, context=audio_text.to(**bf16)),
            BatchedPerturbationConfig.empty(1))

        def mine() -> tuple[torch.Tensor, ...]:
            return ours(hidden_states=video.to(**bf16), audio_hidden_states=audio.to(**bf16),
                        encoder_hidden_states=video_text.to(**bf16), audio_encoder_hidden_states=audio_text.to(**bf16),
                        timestep=sigma * 1000, sigma=sigma * 1000, num_frames=frames, height=height, width=width,
                        audio_num_frames=audio_tokens, video_coords=video_coords, audio_coords=audio_coords,
                        use_cross_timestep=True, return_dict=False)

        with_lora = mine()
        ours.disable_adapters()
        base = mine()
    for adapted, plain, fused_out in zip(with_lora, base, theirs, strict=True):
        effect = (adapted.float() - plain.float()).abs().max()
        assert effect > 0.1  # the LoRA changes the output ...
        assert (adapted.float() - fused_out.float()).abs().max() <= 0.1 * effect  # ... and ltx-core's fusing agrees
