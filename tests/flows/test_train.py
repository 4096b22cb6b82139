"""The train stage on the tiny model: checkpoints in the store, LoRA files, exact resume, rerun no-op."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flows.pipeline import pipeline
from storage.store import Store
from tests.flows.helpers import make_dataset, train_project

ALL = ["probe", "filter", "bucket", "captions", "text-embeds", "latents", "train"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("train-clips") / "videos")


def project(root: Path, clips: Path, **train) -> dict:
    return train_project(root, clips, **train)


def run(p: dict, **kw) -> dict:
    return {(r["stage"], r["scope"]): r for r in pipeline(**p, stages=ALL, **kw)}


def test_training_writes_checkpoints_and_lora_files_and_a_rerun_is_a_noop(tmp_path, clips, prefect_api, tiny):
    p = project(tmp_path, clips)
    reports = run(p)
    assert reports[("train", "run")]["done"] == 4
    store = Store.open(p["storage"])
    rows = store.read("checkpoints").to_pylist()
    assert sorted(r["step"] for r in rows) == [2, 4] and all(r["run_id"] == "run" for r in rows)
    out = tmp_path / "output" / "run"
    final = load_file(out / "pytorch_lora_weights.safetensors")
    assert final and all(k.startswith("transformer.") and "lora" in k for k in final)
    assert any(t.abs().sum() > 0 for k, t in final.items() if "lora_B" in k)  # it trained
    comfy = load_file(out / "lora_comfyui.safetensors")
    assert comfy and all(k.startswith("diffusion_model.") for k in comfy)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = run(p)
    assert all(r["up_to_date"] for r in again.values())
    assert store.count("checkpoints") == 2


def test_a_run_stopped_at_step_2_and_resumed_ends_with_the_same_lora_as_a_straight_run(tmp_path, clips, prefect_api,
                                                                                        tiny):
    straight = project(tmp_path / "straight", clips)
    run(straight)
    resumed = project(tmp_path / "resumed", clips, max_train_steps=2)
    run(resumed)
    resumed = project(tmp_path / "resumed", clips, max_train_steps=4)
    reports = run(resumed)
    assert reports[("train", "run")]["done"] == 2 and reports[("train", "run")]["skipped"] == 2

    def lora_at_4(p: dict) -> dict[str, torch.Tensor]:
        row = Store.open(p["storage"]).read("checkpoints", where="step = 4").to_pylist()[0]
        return load_file(Path(row["lora_path"]) / "pytorch_lora_weights.safetensors")

    a, b = lora_at_4(straight), lora_at_4(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_with_changed_settings_is_refused_naming_the_difference(tmp_path, clips, prefect_api, tiny):
    p = project(tmp_path, clips, max_train_steps=2)
    run(p)
    p = project(tmp_path, clips, max_train_steps=4, learning_rate=5e-4)
    with pytest.raises(Exception, match=r"learning_rate: 0\.001 -> 0\.0005"):
        run(p)


def test_tread_routes_from_the_config_train(tmp_path, clips, prefect_api, tiny):
    p = project(tmp_path, clips, max_train_steps=2,
                tread_config={"routes": [{"selection_ratio": 0.5, "start_layer_idx": 0, "end_layer_idx": -1}]})
    reports = run(p)
    assert reports[("train", "run")]["done"] == 2
    rows = Store.open(p["storage"]).read("checkpoints").to_pylist()
    assert [r["step"] for r in rows] == [2] and rows[0]["loss"] is not None


def test_crepa_without_local_dinov2_weights_fails_with_what_to_do(tmp_path, clips, prefect_api, tiny, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty hub cache
    p = project(tmp_path, clips, max_train_steps=2, crepa_enabled=True, crepa_block_index=0)
    with pytest.raises(Exception, match="(?s)dinov2.*MISSING"):
        run(p)


@pytest.mark.parametrize("memory", [{"musubi_blocks_to_swap": 1}, {"enable_group_offload": True},
                                    {"base_model_precision": "fp8-e4m3fn"}])
def test_memory_options_from_the_config_train(tmp_path, clips, prefect_api, tiny, memory):
    p = project(tmp_path, clips, max_train_steps=2, **memory)
    reports = run(p)
    assert reports[("train", "run")]["done"] == 2
    final = load_file(tmp_path / "output" / "run" / "pytorch_lora_weights.safetensors")
    assert any(t.abs().sum() > 0 for k, t in final.items() if "lora_B" in k)


def test_the_train_source_reads_no_features_of_a_caption_expanded_before_training(tmp_path):
    from ltx2core.data.tensors import to_record
    from ltx2core.training.data import ExpandedCaption
    from tasks.train_ranks import StoreSource

    store = Store.open(str(tmp_path / "store"))
    latents, features = torch.randn(8, 2, 4, 4), torch.randn(5, 16)
    z, f = to_record(latents), to_record(features)
    store.upsert("latents", [{"key": f"lat{i}", "video_id": "v", "clip_spec": "c", "bucket": "b", "vae_fp": "fp",
                              "options": "o", "frame_rate": 25.0, "latents": z[0], "latents_shape": z[1],
                              "latents_dtype": z[2]} for i in (0, 1)])
    # the features of "txt0" only: "txt1" is expanded, and a source that read its row would fail on a missing key
    store.upsert("text_embeds", [{"key": "txt0", "caption": "a", "encoder_fp": "e", "max_length": 16,
                                  "num_tokens": 5, "features": f[0], "features_shape": f[1], "features_dtype": f[2]}])
    expanded = ExpandedCaption(torch.zeros(16, 8), torch.zeros(16, 4), torch.ones(16))
    source = StoreSource(store, {"s0": ("lat0", "txt0", 25.0), "s1": ("lat1", "txt1", 24.0)},
                         captions={"txt1": expanded})

    plain, precomputed = source.load(["s0", "s1"])
    assert torch.equal(plain.latents, latents) and torch.equal(plain.text_features, features)
    assert plain.caption is None
    assert precomputed.text_features is None and precomputed.caption is expanded and precomputed.frame_rate == 24.0
