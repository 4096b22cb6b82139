"""config.json: SimpleTuner keys and spellings, LTX-2 rules, every problem at once.

Run: .venv/bin/pytest tests/ltx2core/config -q
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from config_samples import TEXT_EMBEDS_BLOCK, TRAIN_CONFIG, video_block, write_json
from pydantic import ValidationError

from ltx2core.config import ConfigError, TrainConfig, load_project, load_train_config

FILE = "config/config.json"


def load(**changes: Any) -> tuple:
    return load_train_config(write_json(FILE, {**TRAIN_CONFIG, **changes}))


def problems(**changes: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(**changes)
    return caught.value.problems


def test_defaults_follow_simpletuner(workdir: Path) -> None:
    config, warnings = load_train_config(write_json(FILE, {"model_family": "ltxvideo2"}))
    assert warnings == []
    assert config.pretrained_model_name_or_path == "Lightricks/LTX-2"
    assert (config.model_flavour, config.lora_rank, config.lora_alpha, config.lora_dropout) == ("2.0", 16, 16.0, 0.1)
    assert (config.frame_rate, config.validation_num_video_frames, config.num_train_epochs) == (25, 121, 1)
    assert config.output_dir == workdir / "output/models"
    assert config.data_backend_config == workdir / "config/multidatabackend.json"


@pytest.mark.parametrize(
    ("key", "raw", "attribute", "expected"),
    [
        ("learning_rate", "1e-4", "learning_rate", 1e-4),
        ("--learning_rate", "2e-5", "learning_rate", 2e-5),
        ("--lora_rank", "32", "lora_rank", 32),
        ("gradient_checkpointing", "false", "gradient_checkpointing", False),
        ("--vae_enable_tiling", "true", "vae_enable_tiling", True),
        ("validation_guidance", "4.5", "validation_guidance", 4.5),
        ("--num_train_epochs", "0", "num_train_epochs", None),
        ("framerate", 24, "frame_rate", 24),
        ("validation_resolution", "768x512, 512x768", "validation_resolution", [(768, 512), (512, 768)]),
        ("validation_resolution", 256, "validation_resolution", [(256, 256)]),
        ("peft_lora_target_modules", '["to_q", "to_k"]', "peft_lora_target_modules", ["to_q", "to_k"]),
        ("peft_lora_target_modules", "to_q,to_v", "peft_lora_target_modules", ["to_q", "to_v"]),
        ("tread_config", '{"routes": [{"selection_ratio": 0.5, "start_layer_idx": 2, "end_layer_idx": -2}]}',
         "tread_config.routes.0.end_layer_idx", -2),
    ],
)
def test_simpletuner_spellings_and_string_values_load(
    workdir: Path, key: str, raw: Any, attribute: str, expected: Any
) -> None:
    config, warnings = load(**{key: raw})
    value = config
    for part in attribute.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    assert value == expected
    assert warnings == []


@pytest.mark.parametrize("flavour", ["dev", "2", "2.0", 2, 2.0])
def test_flavour_aliases_mean_ltx2_dev(workdir: Path, flavour: Any) -> None:
    assert load(model_flavour=flavour).config.model_flavour == "2.0"


@pytest.mark.parametrize(("flavour", "name", "repo"), [
    ("2.3", "2.3", "diffusers/LTX-2.3-Diffusers"), ("2.3-dev", "2.3", "diffusers/LTX-2.3-Diffusers"),
    ("2.3-distilled", "2.3-distilled", "dg845/LTX-2.3-Distilled-Diffusers"),
    ("2.5", "2.5", "Lightricks/LTX-2.5-Diffusers"), ("2.5-dev", "2.5", "Lightricks/LTX-2.5-Diffusers"),
    ("2.5-distilled", "2.5-distilled", "Lightricks/LTX-2.5-Diffusers"),
])
def test_each_flavour_defaults_to_its_release_s_diffusers_repo(workdir: Path, flavour: str, name: str,
                                                                repo: str) -> None:
    config = load_train_config(write_json(FILE, {"model_family": "ltxvideo2", "model_flavour": flavour}))[0]
    assert (config.model_flavour, config.pretrained_model_name_or_path) == (name, repo)
    assert load(model_flavour=flavour)[0].pretrained_model_name_or_path == "tiny"  # a path given stays


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"model_flavour": "3.0"},
         "model_flavour '3.0' is not supported: use one of 2.0, 2.3, 2.3-distilled, 2.5, 2.5-distilled (aliases: "
         "2, dev, 2.0-dev, 2.3-dev, 2.5-dev)"),
        ({"model_family": "flux"}, "model_family 'flux' is not supported: this trainer trains LTX-2 only; "
         "set model_family to 'ltxvideo2'"),
        ({"validation_num_video_frames": 61}, "validation_num_video_frames 61 is not 8k+1: use 57 or 65"),
        ({"validation_resolution": "500x512"},
         "validation_resolution '500x512' width 500 is not a multiple of 32: use 480 or 512"),
        ({"validation_resolution": "768x500"},
         "validation_resolution '768x500' height 500 is not a multiple of 32: use 480 or 512"),
        ({"validation_resolution": "768by512"}, "validation_resolution '768by512' is not WxH (e.g. 768x512)"),
        ({"model_type": "full"}, "model_type \"full\": Input should be 'lora'"),
        ({"train_text_encoder": True}, "train_text_encoder true is not supported: Gemma3 stays frozen and its embeds "
         "are cached; set it to false"),
        ({"max_train_steps": 0, "num_train_epochs": 0},
         "max_train_steps or num_train_epochs must be set (both are 0/unset)"),
        ({"enable_group_offload": True, "gradient_checkpointing": False},
         "enable_group_offload needs gradient_checkpointing true: without it backward fails with weights left "
         "on the CPU"),
        ({"frame_rate": 25, "framerate": 24}, "frame_rate 25 and framerate 24 are the same setting: keep one"),
        ({"gradient_checkpointing_policy": "selective", "gradient_checkpointing": False},
         "gradient_checkpointing_policy selective needs gradient_checkpointing true (without checkpointing "
         "everything is kept anyway)"),
        ({"selective_checkpointing_blocks": 30}, "selective_checkpointing_blocks only applies with "
         "gradient_checkpointing_policy selective: set that, or remove this key"),
        ({"compile_blocks": True, "musubi_blocks_to_swap": 8}, "compile_blocks with musubi_blocks_to_swap is not "
         "supported yet (not verified to train the same LoRA): set compile_blocks false or remove "
         "musubi_blocks_to_swap"),
    ],
)
def test_rule_breaks_are_rejected_with_the_fix(workdir: Path, changes: dict, line: str) -> None:
    assert problems(**changes) == [f"{FILE}: {line}"]


def test_unknown_keys_give_one_warning_naming_them_all(workdir: Path) -> None:
    config, warnings = load(**{"--attention_mechanism": "diffusers", "hub_model_id": "me/lora", "resolution": 512})
    assert warnings == [
        f"{FILE}: ignored 3 keys this trainer does not use: attention_mechanism, hub_model_id, resolution"
    ]
    assert config.max_train_steps == TRAIN_CONFIG["max_train_steps"]


def test_streamed_group_offload_is_turned_off_with_a_warning(workdir: Path) -> None:
    config, warnings = load(enable_group_offload=True, group_offload_use_stream="true")
    assert config.enable_group_offload and not config.group_offload_use_stream
    assert len(warnings) == 1 and "group_offload_use_stream turned off" in warnings[0]


def test_every_problem_is_reported_together(workdir: Path) -> None:
    lines = problems(learning_rate=-1, lora_rank="sixteen", validation_num_video_frames=50, lr_scheduler="sine")
    assert lines == [
        f"{FILE}: learning_rate -1: Input should be greater than 0",
        f'{FILE}: lr_scheduler "sine": Input should be \'constant\', \'constant_with_warmup\', \'linear\', \'cosine\', '
        "'cosine_with_restarts' or 'polynomial'",
        f'{FILE}: lora_rank "sixteen": Input should be a valid integer, unable to parse string as an integer',
        f"{FILE}: validation_num_video_frames 50 is not 8k+1: use 49 or 57",
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('{\n  "seed": 1,\n}\n', "invalid JSON at line 3 column 1: Expecting property name enclosed in double quotes"),
        ('{"seed": 1 "lora_rank": 4}', "invalid JSON at line 1 column 12: Expecting ',' delimiter"),
        ('["not", "an", "object"]', "expected a JSON object of settings, got a list"),
        ('{"seed": 1, "seed": 2}', "key 'seed' appears twice in one object: keep one"),
        ('{"seed": 1, "--seed": 2}', "'seed' is given twice (as 'seed' and '--seed'): keep one"),
    ],
)
def test_malformed_files_are_named_with_the_place(workdir: Path, text: str, line: str) -> None:
    Path("config").mkdir()
    Path(FILE).write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_train_config(FILE)
    assert caught.value.problems == [f"{FILE}: {line}"]


def test_missing_file_is_named(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_train_config("config/nope.json")
    assert caught.value.problems == [f"config/nope.json: no such file (looked for {workdir / 'config/nope.json'})"]


def test_project_reports_both_files_together(workdir: Path) -> None:
    write_json("config/multidatabackend.json", [video_block(video={"num_frames": 61, "min_frames": 65})])
    with pytest.raises(ConfigError) as caught:
        load_project(write_json(FILE, {**TRAIN_CONFIG, "model_flavour": "dev-fp8"}))
    assert caught.value.problems == [
        f"{FILE}: model_flavour 'dev-fp8' is not supported (pre-quantised weights are not loaded: train the bf16 "
        "model with base_model_precision fp8-e4m3fn or int8-torchao): use one of 2.0, 2.3, 2.3-distilled, 2.5, "
        "2.5-distilled (aliases: 2, dev, 2.0-dev, 2.3-dev, 2.5-dev)",
        "config/multidatabackend.json: dataset 'my-video-dataset': video.num_frames 61 is not 8k+1: use 57 or 65",
    ]
    assert "2 problems in the config:\n  - config/config.json: model_flavour" in str(caught.value)


def test_project_follows_data_backend_config_and_checks_eval_dataset(workdir: Path) -> None:
    write_json("other/datasets.json", [video_block(), TEXT_EMBEDS_BLOCK])
    config_file = write_json(FILE, {**TRAIN_CONFIG, "--data_backend_config": "other/datasets.json"})
    config, datasets, _ = load_project(config_file)
    assert config.data_backend_config == workdir / "other/datasets.json"
    assert [d.id for d in datasets] == ["my-video-dataset", "text-embeds"]

    write_json(FILE, {**TRAIN_CONFIG, "data_backend_config": "other/datasets.json", "eval_dataset_id": "text-embeds"})
    with pytest.raises(ConfigError) as caught:
        load_project(FILE)
    assert caught.value.problems == [
        f"{FILE}: eval_dataset_id 'text-embeds' is not an enabled video dataset in {workdir / 'other/datasets.json'}: "
        "use one of ['my-video-dataset']"
    ]


def test_the_model_itself_refuses_streamed_offload_with_checkpointing() -> None:
    with pytest.raises(ValidationError, match="group_offload_use_stream with gradient_checkpointing trains nothing"):
        TrainConfig(enable_group_offload=True, group_offload_use_stream=True)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TrainConfig(lora_rnak=8)


def test_simpletuners_adamw_bf16_loads_as_adamw_with_a_warning(tmp_path) -> None:
    from ltx2core.config.load import load_train_config

    path = tmp_path / "config.json"
    path.write_text('{"model_family": "ltxvideo2", "--optimizer": "adamw_bf16"}')
    config, warnings = load_train_config(path)
    assert config.optimizer == "adamw"
    assert any("adamw_bf16 trains as adamw" in w and str(path) in w for w in warnings)


def test_data_backend_config_is_found_beside_the_config_then_in_the_working_folder(workdir: Path) -> None:
    write_json("config/datasets.json", [video_block(), TEXT_EMBEDS_BLOCK])
    write_json("datasets.json", [video_block(id="in-the-working-folder"), TEXT_EMBEDS_BLOCK])
    write_json("config/multidatabackend.json", [video_block(id="the-cli-default"), TEXT_EMBEDS_BLOCK])
    config_file = write_json(FILE, {**TRAIN_CONFIG, "data_backend_config": "datasets.json"})
    _, datasets, warnings = load_project(config_file)  # config/datasets.json: beside the config wins
    assert [d.id for d in datasets] == ["my-video-dataset", "text-embeds"] and warnings == []

    Path("config/datasets.json").unlink()  # then the working folder, as SimpleTuner reads it
    assert load_project(config_file).datasets[0].id == "in-the-working-folder"

    _, datasets, warnings = load_project(config_file, "config/multidatabackend.json")  # given for the run: used
    assert datasets[0].id == "the-cli-default"
    assert warnings == [f"using the datasets file config/multidatabackend.json given for this run; {FILE}'s "
                        f"data_backend_config {workdir / 'datasets.json'} is not read"]


def test_validation_prompt_library_false_means_none(workdir: Path) -> None:
    assert load(validation_prompt_library=False).config.validation_prompt_library is None
    assert load(validation_prompt_library="false").config.validation_prompt_library is None


def test_a_misspelt_key_is_named_once_with_the_key_it_is_close_to(workdir: Path) -> None:
    _, warnings = load(lora_rnak=8, hub_model_id="me/lora")
    assert warnings == [f"{FILE}: ignored 2 keys this trainer does not use: lora_rnak (did you mean lora_rank?), "
                        "hub_model_id"]
