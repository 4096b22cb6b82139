"""What a rehearsal changes in the user's config, the clips it makes, and the advice it gives from what it measured."""

from __future__ import annotations

import json

import pytest

from ltx2core.config.databackend import VideoDataset
from ltx2core.config.train import TrainConfig
from ltx2core.rehearsal import (
    CAPTION_TOKENS,
    FIT_TRIES,
    StageFigures,
    advice,
    caption,
    clip_shape,
    fit_tries,
    median_step_seconds,
    write_rehearsal_configs,
)


def _dataset(tmp_path, **keys) -> VideoDataset:
    block = {"id": "clips", "dataset_type": "video", "instance_data_dir": str(tmp_path), "resolution": 512,
             "video": {"num_frames": 121, "frame_rate": 24}} | keys
    return VideoDataset.model_validate(block)


@pytest.mark.parametrize(("keys", "shape"), [
    ({}, "768x512x121"),
    ({"resolution_type": "pixel_area", "resolution": 640}, "768x512x121"),  # 640^2 px at 3:2: 784x523 rounded
    ({"resolution_type": "area", "resolution": 0.39}, "768x512x121"),
    ({"video": {"num_frames": 49, "frame_rate": 24, "audio": {}}}, "768x512x49 + audio"),
])
def test_synthetic_clips_take_the_dataset_s_size_length_and_audio(tmp_path, keys, shape):
    assert clip_shape(_dataset(tmp_path, **keys)).describe() == shape
    assert clip_shape(_dataset(tmp_path), aspect=1.0).describe() == "512x512x121"


def test_the_rehearsal_config_changes_the_model_data_output_and_steps_and_keeps_everything_else(tmp_path):
    user = tmp_path / "config.json"
    user.write_text(json.dumps({"model_flavour": "2.3", "pretrained_model_name_or_path": "/models/ltx-2.3.safetensors",
                                "text_encoder_path": "/models/gemma", "lora_rank": 64, "musubi_blocks_to_swap": 8,
                                "output_dir": "/runs/mine", "max_train_steps": 3000, "validation_prompt": "a cat"}))
    backend = [{"id": "clips", "dataset_type": "video", "instance_data_dir": "/data/clips", "resolution": 512,
                "caption_strategy": "parquet", "video": {"num_frames": 121}, "conditioning_data": "refs"},
               {"id": "text-embeds", "dataset_type": "text_embeds", "default": True},
               {"id": "refs", "dataset_type": "conditioning", "instance_data_dir": "/data/refs"}]
    work = tmp_path / "work"
    work.mkdir()
    config_file, backend_file = write_rehearsal_configs(
        user, backend, work, model="random", steps=8, clip_folders={"clips": work / "clips"},
        change=FIT_TRIES["train"][-1])
    config = json.loads(config_file.read_text())
    assert config["pretrained_model_name_or_path"] == "random" and "text_encoder_path" not in config
    assert config["output_dir"] == str(work / "output") and config["max_train_steps"] == 8
    assert config["lora_rank"] == 64 and config["validation_prompt"] == "a cat" and config["model_flavour"] == "2.3"
    assert config["base_model_precision"] == "fp8-e4m3fn" and config["musubi_blocks_to_swap"] == 32  # the try's
    video, text, refs = json.loads(backend_file.read_text())
    assert refs["instance_data_dir"] == str(work / "clips")  # IC-LoRA: the synthetic clips are their references
    assert video["instance_data_dir"] == str(work / "clips") and video["caption_strategy"] == "textfile"
    assert video["resolution"] == 384 and video["video"] == {"num_frames": 121}  # x0.75, length kept
    assert text == backend[1]
    assert json.loads(user.read_text())["output_dir"] == "/runs/mine"  # the user's file is untouched


def test_fit_tries_leave_out_what_the_config_already_has():
    swapped = TrainConfig.model_validate({"output_dir": "out", "musubi_blocks_to_swap": 16})
    labels = [t.label for t in fit_tries("train", swapped)]
    assert "musubi_blocks_to_swap 16" not in labels and labels[0] == "musubi_blocks_to_swap 32"
    plain = TrainConfig.model_validate({"output_dir": "out"})
    assert len(fit_tries("train", plain)) == len(FIT_TRIES["train"]) and fit_tries("probe", plain) == []
    rolled = TrainConfig.model_validate({"output_dir": "out", "vae_enable_temporal_roll": True})
    assert [t.label for t in fit_tries("latents", rolled)][0] == "vae_enable_temporal_roll + vae_enable_patch_conv"


def test_advice_names_the_first_option_that_fit_with_its_figures():
    fits = StageFigures("train", items=8, gpu_peak_gib=61.2)
    assert advice(fits, 80.0) == "train fits 80 GiB as configured (peak 61.2 GiB)"
    oom = StageFigures("train", error="the GPU ran out of memory (OutOfMemoryError: ...)", tries=[
        {"label": "musubi_blocks_to_swap 16", "error": "the GPU ran out of memory", "s_per_step": None,
         "gpu_peak_gib": 23.9},
        {"label": "musubi_blocks_to_swap 32", "error": None, "s_per_step": 4.21, "gpu_peak_gib": 19.6}])
    assert advice(oom, 24.0) == (
        "train does not fit 24 GiB as configured; it fits with musubi_blocks_to_swap 32 (4.21 s/step, peak 19.6 GiB)."
        " Tried: musubi_blocks_to_swap 16: out of memory; musubi_blocks_to_swap 32: 4.21 s/step, peak 19.6 GiB")
    oom.tries = oom.tries[:1]
    assert advice(oom, 24.0).startswith("train does not fit 24 GiB as configured, nor with any option tried")
    assert advice(StageFigures("latents"), None) == "latents fits this machine as configured"


def test_step_seconds_leave_out_the_warm_up_steps(tmp_path):
    csv = tmp_path / "loss.csv"
    csv.write_text("step,loss,s_per_step\n1,1.0,30.0\n2,1.0,9.0\n3,1.0,1.0\n4,1.0,1.2\n5,1.0,1.1\n")
    assert median_step_seconds(csv) == pytest.approx(1.1)
    assert median_step_seconds(tmp_path / "missing.csv") is None


def test_captions_are_of_a_detailed_prompts_length_and_the_same_for_a_seed():
    from ltx2core.models.tiny import char_tokenizer

    assert caption(3) == caption(3) != caption(4)
    lengths = [len(ids) for ids in char_tokenizer(1024)([caption(seed) for seed in range(200)])["input_ids"]]
    assert min(lengths) >= CAPTION_TOKENS[0] - 1 and max(lengths) == CAPTION_TOKENS[1]  # a word may end early
    assert 190 <= sum(lengths) / len(lengths) <= 210


def test_the_rate_past_the_load_leaves_out_the_models_load_once_and_only_where_it_can():
    text = StageFigures("text-embeds", items=256, unit="caption", stage_seconds=12.0, load_seconds=8.0)
    assert text.rate() == 12.0 / 256 and text.rate_past_load() == 4.0 / 256
    assert StageFigures("probe", items=10, stage_seconds=1.0).rate_past_load() is None  # loads no model
    side_by_side = StageFigures("latents", items=8, stage_seconds=5.0, load_seconds=6.0)  # two shards loaded at once
    assert side_by_side.rate_past_load() is None
    train = StageFigures("train", items=12, stage_seconds=90.0, load_seconds=20.0, per_item_s=0.9)
    assert train.rate_past_load() is None  # its own figure (the median step) already leaves the load out
