"""ltx2core/keys.py on its own: for each setting that changes numbers, changing it changes exactly the keys it should
and no other; settings that change no numbers change no key."""

from __future__ import annotations

from typing import Any

import pytest

from ltx2core import keys
from ltx2core.config.databackend import VideoDataset
from ltx2core.config.train import TrainConfig
from ltx2core.models.flavours import FLAVOURS
from ltx2core.models.source import ModelSource

SOURCE_20 = ModelSource("Lightricks/LTX-2", FLAVOURS["2.0"], is_local=False)
DEV_SCHEDULER = {"use_dynamic_shifting": True, "base_shift": 0.95, "max_shift": 2.05, "base_image_seq_len": 1024,
                 "max_image_seq_len": 4096}

SAMPLE = {"video_id": "v" * 24, "bucket": "512x768x49"}
CAPTION = "a red square moves right"
ALL = {"sample_id", "filter", "bucket", "latents", "text"}


def dataset(**video: Any) -> VideoDataset:
    block = {"id": "clips", "instance_data_dir": "/tmp", "resolution": 512, "repeats": video.pop("repeats", 0),
             "video": {"num_frames": 49, "min_frames": 65, "max_frames": 121, "frame_rate": 25} | video}
    return VideoDataset.model_validate(block)


def config(**keys_: Any) -> TrainConfig:
    return TrainConfig.model_validate({"model_family": "ltxvideo2", "pretrained_model_name_or_path": "tiny",
                                       "output_dir": "/runs/a"} | keys_)


def all_keys(tiny: ModelSource, d: VideoDataset, c: TrainConfig, sample: dict = SAMPLE) -> dict[str, str]:
    latent_model = keys.latent_model(tiny, c)
    return {"sample_id": keys.sample_id(d.id, sample["video_id"], keys.clip_spec(d)),
            "filter": keys.filter_fingerprint(d), "bucket": keys.bucket_spec(d).fingerprint,
            "latents": keys.latent_key(sample, d, latent_model), "text": keys.text_model(tiny).key(CAPTION)}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


@pytest.mark.parametrize(("video", "expected"), [
    ({"num_frames": 57}, {"sample_id", "filter", "bucket", "latents"}),  # what a sample is cut as
    ({"frame_rate": 24}, {"sample_id", "filter", "bucket", "latents"}),
    ({"min_frames": 73}, {"filter"}),  # decides only which videos are kept
    ({"max_frames": 97}, {"filter", "bucket"}),
    ({"repeats": 2}, {"filter"}),
    ({"audio": {"sample_rate": 16000, "channels": 2}}, {"latents"}),
])
def test_a_dataset_setting_changes_exactly_its_keys(tiny: ModelSource, video: dict, expected: set[str]) -> None:
    assert changed(all_keys(tiny, dataset(), config()), all_keys(tiny, dataset(**video), config())) == expected


def test_the_resolution_changes_the_buckets_and_through_them_the_latents(tiny: ModelSource) -> None:
    low = VideoDataset.model_validate(dataset().model_dump() | {"resolution": 768})
    assert changed(all_keys(tiny, dataset(), config()), all_keys(tiny, low, config())) == {"bucket"}
    rebucketed = SAMPLE | {"bucket": "768x1152x49"}  # the bucket stage's new answer for the same sample
    assert changed(all_keys(tiny, dataset(), config()), all_keys(tiny, low, config(), rebucketed)) == {
        "bucket", "latents"}


def test_a_loose_reference_fit_changes_only_the_latents_of_an_ic_lora_dataset(tiny: ModelSource) -> None:
    """reference_loose encodes references of another aspect that reference_strict refuses: not the same rows."""
    strict = dataset().model_copy(update={"reference_dir": "/refs"})
    loose = strict.model_copy(update={"reference_fit": "reference_loose"})
    assert changed(all_keys(tiny, strict, config()), all_keys(tiny, loose, config())) == {"latents"}
    assert changed(all_keys(tiny, dataset(), config()),
                   all_keys(tiny, dataset().model_copy(update={"reference_fit": "reference_loose"}), config())) == set()


@pytest.mark.parametrize("switch", ["vae_enable_slicing", "vae_enable_patch_conv", "vae_enable_temporal_roll"])
def test_exact_vae_options_change_no_key(tiny: ModelSource, switch: str) -> None:
    """Slicing, patch-conv and temporal roll give the same latents (tests/ltx2core/models): same key, no recompute."""
    assert changed(all_keys(tiny, dataset(), config()), all_keys(tiny, dataset(), config(**{switch: True}))) == set()


def test_tiling_changes_the_latent_key_only_when_its_halo_is_short_of_the_encoder_reach(tiny: ModelSource) -> None:
    from ltx2core.models.source import component_config
    from ltx2core.models.vae_options import encoder_receptive_radius

    tiled = keys.vae_options(config(vae_enable_tiling=True))
    short = tiled.halo < encoder_receptive_radius(component_config(tiny, "vae"))
    assert changed(all_keys(tiny, dataset(), config()),
                   all_keys(tiny, dataset(), config(vae_enable_tiling=True))) == ({"latents"} if short else set())


def test_config_switches_map_to_options() -> None:
    options = keys.vae_options(config(vae_enable_tiling=True, vae_enable_slicing=True, vae_enable_patch_conv=True,
                                      vae_enable_temporal_roll=True))
    assert (options.tiling, options.slicing, options.patch_conv, options.temporal_roll) == (True, True, True, True)
    assert not options.framewise
    assert keys.vae_options(config()) == type(options)()  # every switch off by default


def test_training_settings_change_no_cache_key(tiny: ModelSource) -> None:
    trained = config(learning_rate=1e-3, lora_rank=64, max_train_steps=10, seed=7, output_dir="/runs/b")
    assert changed(all_keys(tiny, dataset(), config()), all_keys(tiny, dataset(), trained)) == set()
    assert keys.run_id(trained) == "b" and keys.run_id(config()) == "a"


def test_the_text_key_follows_the_caption_and_the_max_length(tiny: ModelSource) -> None:
    model = keys.text_model(tiny)
    assert model.key(CAPTION) != model.key(CAPTION + ".")
    longer = keys.TextModel(model.encoder_fp, model.max_length * 2)
    assert longer.key(CAPTION) != model.key(CAPTION)


def test_step_count_one_derivation(tiny: ModelSource) -> None:
    buckets = {"a": [(f"s{i}", 0) for i in range(6)], "b": [("t0", 1)]}  # 6 + 2 draws
    assert keys.max_steps(config(max_train_steps=5), keys.train_batches(config(), buckets), processes=2) == 5
    per_epoch = config(num_train_epochs=3, train_batch_size=2, gradient_accumulation_steps=1)
    batches = keys.train_batches(per_epoch, buckets)
    assert keys.max_steps(per_epoch, batches, processes=1) == 3 * batches.steps_per_epoch(1)
    assert keys.max_steps(per_epoch, batches, processes=2) == 3 * batches.steps_per_epoch(2)
    assert batches.steps_per_epoch(2) < batches.steps_per_epoch(1)


def test_null_seed_is_the_schema_default_and_validation_needs_a_prompt() -> None:
    assert config(seed=None).seed == config().seed == 42
    assert not keys.has_validation_prompts(config())
    assert keys.has_validation_prompts(config(validation_prompt="a cat"))
    assert keys.has_validation_prompts(config(validation_using_datasets=True, eval_dataset_id="clips"))


def test_the_model_and_loop_settings_come_from_the_config_in_one_place() -> None:
    c = config(lora_rank=8, lora_alpha=4, base_model_precision="fp8-e4m3fn", musubi_blocks_to_swap=2,
               max_train_steps=9, learning_rate=3e-4, gradient_accumulation_steps=2, validation_steps=5,
               checkpointing_steps=3)
    model = keys.model_settings(c, num_blocks=4, with_audio=False, world_size=1)
    assert (model.lora.rank, model.lora.alpha, model.base_precision, model.seed) == (8, 4, "fp8-e4m3fn", 42)
    assert model.swap is not None and not model.with_audio and not model.fsdp
    sharded = config(fsdp_enable=True)
    assert not keys.model_settings(sharded, num_blocks=4, with_audio=True, world_size=1).fsdp  # one rank: nothing
    assert keys.model_settings(sharded, num_blocks=4, with_audio=True, world_size=2).fsdp
    loop = keys.train_settings(c, SOURCE_20, max_steps=9, num_blocks=4, scheduler_config=DEV_SCHEDULER,
                               device="cpu")
    assert (loop.max_steps, loop.learning_rate, loop.gradient_accumulation_steps, loop.seed) == (9, 3e-4, 2, 42)
    assert (loop.validation_steps, loop.checkpointing_steps, str(loop.output_dir)) == (5, 3, "/runs/a")


MODEL_KEYS = {"latents", "text"}


def test_switching_the_flavour_changes_exactly_the_model_keys_and_switching_back_none(tiny, tiny_of) -> None:
    base = all_keys(tiny, dataset(), config())
    for flavour in ("2.3", "2.5"):
        assert changed(base, all_keys(tiny_of(flavour), dataset(), config(model_flavour=flavour))) == MODEL_KEYS
    assert changed(base, all_keys(tiny_of("2.0"), dataset(), config())) == set()
    assert changed(all_keys(tiny_of("2.3"), dataset(), config()),
                   all_keys(tiny_of("2.5"), dataset(), config())) == MODEL_KEYS


def test_a_release_dev_and_distilled_share_its_repo_s_text_and_latents_not_the_transformer(tiny_of) -> None:
    from ltx2core.models.fingerprint import component_fingerprint

    dev, distilled = tiny_of("2.5"), tiny_of("2.5-distilled")
    assert dev.name_or_path == distilled.name_or_path  # one folder, as LTX-2.5-Diffusers is one repo
    assert changed(all_keys(dev, dataset(), config()), all_keys(distilled, dataset(), config())) == set()
    assert component_fingerprint(dev, "transformer") != component_fingerprint(distilled, "transformer")


def test_the_flavour_decides_the_training_noise_levels_and_how_the_transformer_is_called() -> None:
    from ltx2core.training.flow_matching import DistilledSigmas, DynamicShift

    def loop(flavour: str, scheduler: dict):
        source = ModelSource(FLAVOURS[flavour].repo, FLAVOURS[flavour], is_local=False)
        return keys.train_settings(config(), source, max_steps=1, num_blocks=4, scheduler_config=scheduler,
                                   device="cpu")

    assert isinstance(loop("2.0", DEV_SCHEDULER).sigmas, DynamicShift) and not loop("2.0", DEV_SCHEDULER).cross_timestep
    assert loop("2.3", DEV_SCHEDULER).cross_timestep
    distilled = loop("2.3-distilled", {"use_dynamic_shifting": False})
    assert isinstance(distilled.sigmas, DistilledSigmas) and distilled.cross_timestep
    fingerprints = {f: loop(f, DEV_SCHEDULER if "distilled" not in f else {}).fingerprint() for f in FLAVOURS}
    assert len({repr(sorted(f.items())) for f in fingerprints.values()}) == len(FLAVOURS)  # never resumed across
