"""Validation sampling on the tiny LTX-2 (CPU, float32): cached prompt features against the pipeline's own text
path, determinism, LoRA on and off, group offloading, and image-to-video conditioning."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from diffusers import LTX2Pipeline
from PIL import Image

from ltx2core.media import synth
from ltx2core.media.decode import ClipPlan, decode_frames
from ltx2core.models import loading
from ltx2core.models.source import ModelSource
from ltx2core.training.lora import (
    COMFY_FILE,
    DIFFUSERS_FILE,
    LoraSpec,
    add_lora,
    load_lora_state,
    target_modules,
)
from ltx2core.validation.contact_sheet import GAP, contact_sheet
from ltx2core.validation.sampling import Sample, Sampler, ValidationPrompt, load_sampler, sample_i2v, sample_t2v
from ltx2core.validation.settings import MemoryOptions
from ltx2core.validation.video_io import first_frame_of, to_uint8_frames, write_mp4
from tests.ltx2core.validation.conftest import FRAMES, LORA_ALPHA, LORA_RANK, NEGATIVE, PROMPTS, SETTINGS, SIZE

AUDIO_TOLERANCE = 1e-5  # measured: 0 (bit-identical)
VISIBLE = 5  # levels of 255: a change of the video beyond rounding, somewhere in it


def _largest_change(a: Sample, b: Sample) -> int:
    return int((a.frames.int() - b.frames.int()).abs().max())


def test_cached_features_give_the_video_and_audio_of_the_pipelines_own_text_path(
    tiny: ModelSource, sampler: Sampler, prompts: list[ValidationPrompt], negative: ValidationPrompt
) -> None:
    ours = sample_t2v(sampler, prompts[:1], negative, SETTINGS)[0]

    # The stock pipeline with Gemma and the real connectors, fed the prompt strings.
    pipe = LTX2Pipeline.from_pretrained(tiny.name_or_path, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        prompt=PROMPTS[0], negative_prompt=NEGATIVE, max_sequence_length=tiny.text_max_length,
        width=SIZE, height=SIZE, num_frames=FRAMES, frame_rate=SETTINGS.frame_rate,
        num_inference_steps=SETTINGS.steps, guidance_scale=SETTINGS.guidance, audio_guidance_scale=SETTINGS.guidance,
        stg_scale=0.0, audio_stg_scale=0.0, spatio_temporal_guidance_blocks=None, modality_scale=1.0,
        audio_modality_scale=1.0, guidance_rescale=0.0, audio_guidance_rescale=0.0, use_cross_timestep=False,
        generator=torch.Generator().manual_seed(SETTINGS.seed), output_type="pt",
    )

    assert ours.frames.shape == (FRAMES, SIZE, SIZE, 3)
    assert np.array_equal(ours.frames.numpy(), to_uint8_frames(reference.frames[0]))
    assert ours.audio.shape == reference.audio[0].shape
    assert (ours.audio - reference.audio[0]).abs().max() <= AUDIO_TOLERANCE
    assert ours.frames.float().std() > VISIBLE and ours.audio.abs().max() > 0  # not two blanks agreeing
    assert ours.sample_rate == pipe.vocoder.config.output_sampling_rate


def test_same_seed_gives_the_same_video_at_every_size_asked(
    sampler: Sampler, prompts: list[ValidationPrompt], negative: ValidationPrompt
) -> None:
    sizes = ((SIZE, SIZE), (96, SIZE))
    first = sample_t2v(sampler, prompts[:1], negative, dataclasses.replace(SETTINGS, resolutions=sizes))

    assert [s.resolution for s in first] == list(sizes)
    assert [tuple(s.frames.shape) for s in first] == [(FRAMES, h, w, 3) for w, h in sizes]
    assert {(s.prompt, s.mode, s.seed, s.lora, s.frame_rate) for s in first} == {
        (PROMPTS[0], "t2v", SETTINGS.seed, None, SETTINGS.frame_rate)
    }
    # Each sample draws its own noise from the seed: the same sample alone, later, is identical.
    again = sample_t2v(sampler, prompts[:1], negative, dataclasses.replace(SETTINGS, resolutions=sizes[1:]))[0]
    assert torch.equal(again.frames, first[1].frames) and torch.equal(again.audio, first[1].audio)
    other_seed = dataclasses.replace(SETTINGS, seed=4, resolutions=sizes[1:])
    assert _largest_change(sample_t2v(sampler, prompts[:1], negative, other_seed)[0], first[1]) > VISIBLE


@pytest.fixture(scope="module")
def with_lora(
    sampler: Sampler, prompts: list[ValidationPrompt], negative: ValidationPrompt, lora_folder: Path
) -> Sample:
    return sample_t2v(sampler, prompts[:1], negative, SETTINGS, lora=lora_folder)[0]


def test_lora_changes_the_video_from_either_file_and_comes_off_afterwards(
    sampler: Sampler, prompts: list[ValidationPrompt], negative: ValidationPrompt, lora_folder: Path,
    with_lora: Sample,
) -> None:
    base = sample_t2v(sampler, prompts[:1], negative, SETTINGS)[0]
    from_comfy = sample_t2v(sampler, prompts[:1], negative, SETTINGS, lora=lora_folder / COMFY_FILE)[0]
    base_again = sample_t2v(sampler, prompts[:1], negative, SETTINGS)[0]

    assert base.lora is None
    assert (with_lora.lora, from_comfy.lora) == (lora_folder / DIFFUSERS_FILE, lora_folder / COMFY_FILE)
    assert _largest_change(with_lora, base) > VISIBLE
    # Same product lora_B @ lora_A * alpha / rank from both files: alpha (2x rank) was read, not assumed.
    assert torch.equal(from_comfy.frames, with_lora.frames)
    assert torch.equal(base_again.frames, base.frames)


def test_a_lora_file_that_records_dropout_samples_the_same_video_every_time(
    sampler: Sampler, prompts: list[ValidationPrompt], negative: ValidationPrompt, lora_folder: Path,
    with_lora: Sample, tmp_path: Path,
) -> None:
    # A file as this project wrote them before, and as other trainers do: the training dropout in its header.
    weights, metadata = LTX2Pipeline.lora_state_dict(str(lora_folder / DIFFUSERS_FILE), return_lora_metadata=True)
    LTX2Pipeline.save_lora_weights(
        tmp_path, transformer_lora_layers={k.removeprefix("transformer."): v for k, v in weights.items()},
        transformer_lora_adapter_metadata={k.removeprefix("transformer."): v for k, v in metadata.items()}
        | {"lora_dropout": 0.5})
    first, second = (sample_t2v(sampler, prompts[:1], negative, SETTINGS, lora=tmp_path)[0] for _ in range(2))
    assert torch.equal(first.frames, second.frames)
    assert torch.equal(first.frames, with_lora.frames)  # the same weights without dropout: the same video


def test_sampling_with_a_transformer_in_training_mode_leaves_dropout_out_and_the_mode_as_it_was(
    tiny: ModelSource, sampler: Sampler, prompts: list[ValidationPrompt], negative: ValidationPrompt,
    lora_folder: Path, with_lora: Sample,
) -> None:
    trained = loading.load_transformer(tiny, dtype=torch.float32)  # as the training loop has it: LoRA, train()
    spec = LoraSpec(LORA_RANK, LORA_ALPHA, 0.5, tuple(target_modules(None, with_audio=False)))
    add_lora(trained, spec, seed=0)
    load_lora_state(trained, {k.removeprefix("transformer."): v
                              for k, v in LTX2Pipeline.lora_state_dict(str(lora_folder / DIFFUSERS_FILE)).items()})
    trained.train()
    during_training = load_sampler(tiny, device="cpu", dtype=torch.float32, transformer=trained)
    first, second = (sample_t2v(during_training, prompts[:1], negative, SETTINGS)[0] for _ in range(2))
    assert torch.equal(first.frames, second.frames) and torch.equal(first.frames, with_lora.frames)
    assert trained.training


def test_group_offloading_samples_the_same_video_with_a_lora(
    tiny: ModelSource, prompts: list[ValidationPrompt], negative: ValidationPrompt, lora_folder: Path,
    with_lora: Sample,
) -> None:
    offloaded = load_sampler(tiny, device="cpu", dtype=torch.float32, memory=MemoryOptions(group_offload=True))
    streamed = sample_t2v(offloaded, prompts[:1], negative, SETTINGS, lora=lora_folder)[0]
    assert torch.equal(streamed.frames, with_lora.frames)


def _gradient(
    width: int, height: int, start: tuple[int, int, int], end: tuple[int, int, int], axis: int
) -> Image.Image:
    """A linear ramp from `start` to `end` colour along `axis` (1: left to right, 0: top to bottom)."""
    ramp = np.linspace(0.0, 1.0, width if axis == 1 else height)
    ramp = ramp[None, :, None] if axis == 1 else ramp[:, None, None]
    picture = np.array(start) + ramp * (np.array(end) - np.array(start))
    return Image.fromarray(np.broadcast_to(picture, (height, width, 3)).round().astype(np.uint8))


def _centre_pixels(image: Image.Image, width: int) -> torch.Tensor:
    """The centre `width` columns of `image` as [3, H, W] in [-1, 1], the VAE's input range."""
    left = (image.width - width) // 2
    picture = np.array(image.crop((left, 0, left + width, image.height)))
    return torch.from_numpy(picture).permute(2, 0, 1).float() / 127.5 - 1


def test_i2v_encodes_the_given_first_frame_and_follows_it(
    sampler: Sampler, prompts: list[ValidationPrompt], negative: ValidationPrompt
) -> None:
    wide = 96  # wider than the 64x64 sample: the first frame must be centre-cropped, not squeezed
    red_to_green = _gradient(wide, SIZE, (220, 20, 20), (20, 220, 20), axis=1)
    blue_to_yellow = _gradient(wide, SIZE, (20, 20, 220), (230, 220, 20), axis=0)
    seen: list[torch.Tensor] = []
    hook = sampler.i2v.vae.encoder.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    try:
        samples = sample_i2v(sampler, prompts[:1] * 2, [red_to_green, blue_to_yellow], negative, SETTINGS)
    finally:
        hook.remove()

    assert [s.mode for s in samples] == ["i2v", "i2v"]
    assert [tuple(s.frames.shape) for s in samples] == [(FRAMES, SIZE, SIZE, 3)] * 2
    # What the VAE encoded as the first frame: each image, centre-cropped to 64x64 (and H.264-compressed).
    assert [tuple(x.shape) for x in seen] == [(1, 3, 1, SIZE, SIZE)] * 2
    for encoded, image, other in zip(seen, [red_to_green, blue_to_yellow], [blue_to_yellow, red_to_green]):
        assert (encoded[0, :, 0] - _centre_pixels(image, SIZE)).abs().mean() < 0.05
        assert (encoded[0, :, 0] - _centre_pixels(other, SIZE)).abs().mean() > 0.3
    t2v = sample_t2v(sampler, prompts[:1], negative, SETTINGS)[0]
    assert _largest_change(samples[0], samples[1]) > VISIBLE  # the image steers the video
    assert _largest_change(samples[0], t2v) > VISIBLE


def test_first_frame_of_a_clip_is_frame_zero_of_its_plan(tmp_path: Path) -> None:
    path = synth.write_clip(tmp_path / "clip.mp4", width=128, height=96, num_frames=20, fps=25, seed=2)
    plan = ClipPlan(start_frame=6, num_frames=9, frame_rate=25, resize_width=128, resize_height=96,
                    crop_left=32, crop_top=16, width=SIZE, height=SIZE)
    image = first_frame_of(path, plan)
    assert image.size == (SIZE, SIZE)
    clip = decode_frames(path, plan)
    assert np.array_equal(np.asarray(image), clip[0].numpy())
    assert not np.array_equal(np.asarray(image), clip[-1].numpy())  # the square has moved: frame 0, not any


def test_unusable_requests_are_refused_with_the_fix(
    sampler: Sampler, prompts: list[ValidationPrompt], negative: ValidationPrompt, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=f"{DIFFUSERS_FILE} not found"):
        sample_t2v(sampler, prompts[:1], negative, SETTINGS, lora=tmp_path)
    with pytest.raises(ValueError, match="needs the negative prompt's features"):
        sample_t2v(sampler, prompts[:1], None, SETTINGS)
    with pytest.raises(ValueError, match="1 images for 2 prompts"):
        sample_i2v(sampler, prompts, [Image.new("RGB", (SIZE, SIZE))], negative, SETTINGS)


def test_a_sample_writes_as_an_mp4_with_its_audio_and_a_contact_sheet(with_lora: Sample, tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "sample.mp4", with_lora.frames, fps=with_lora.frame_rate, audio=with_lora.audio,
                     sample_rate=with_lora.sample_rate)
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert (video.width, video.height, video.average_rate) == (SIZE, SIZE, SETTINGS.frame_rate)
        assert (sound.rate, sound.layout.nb_channels) == (with_lora.sample_rate, with_lora.audio.shape[0])
        assert sum(1 for _ in container.decode(video)) == FRAMES
    sheet = Image.open(io.BytesIO(contact_sheet(with_lora.frames, columns=3, count=3)))
    assert sheet.size == (3 * SIZE + 2 * GAP, SIZE)
