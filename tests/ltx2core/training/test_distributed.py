"""Data-parallel training on two processes (torchrun) against one process with the same global batch.

The ranks run on the CPU over gloo, and (marked gpu) on two GPUs over NCCL against a one-process reference on
one of the GPUs; each on the tiny model of LTX-2.0, 2.3 and 2.5 (the GPUs: 2.0 and 2.3), trained as the train stage
trains that flavour (its noise levels and transformer call).

One torchrun launch (distributed_ranks.py) trains three runs on two ranks; the tests compare their
checkpoints with one-process runs here. Two ranks with gradient accumulation 1 take the same batches and draw
the same noise per batch as one process with accumulation 2, so their LoRAs must agree:
  data parallel   equal to the bit (measured); asserted within DATA_PARALLEL_ATOL
  FSDP2           equal up to float summation order, which Adam amplifies on near-zero gradients (measured max
                  |difference| 5.8e-5 with LoRA weights up to 0.38); asserted within FSDP_ATOL, well below
                  what one step with a lost or doubled gradient moves a weight (about the learning rate, 1e-2)
A two-rank run interrupted and resumed on two ranks equals the uninterrupted one to the bit; its checkpoint
resumed on one process (half the global batch) continues at the same step in the recut data order.
Validation during training: the data-parallel run samples on rank 0 alone; the FSDP run samples on every rank
(each forward gathers the other rank's shards), both ranks get the same video, and it matches the data-parallel
run's within SAMPLE_LEVELS (measured on the CPU: at most 1 level of 255, where the four trained steps
move the video 12 levels on average from the untrained LoRA's, up to 111).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from ltx2core.config.load import ConfigError, load_train_config
from ltx2core.training.checkpoint import checkpoint_folder
from ltx2core.training.data import BucketBatches
from ltx2core.training.distributed import SINGLE, process_count, sum_gradients
from ltx2core.training.lora import lora_state_dict
from tests.ltx2core.training import distributed_ranks as ranks

ROOT = Path(__file__).resolve().parents[3]
DATA_PARALLEL_ATOL = 1e-6
FSDP_ATOL = 1e-3
SAMPLE_LEVELS = 2  # of 255: the most a pixel of the FSDP run's validation video may differ from the DDP run's
LAUNCH_TIMEOUT_S = 300
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


@pytest.fixture(scope="module", params=["cpu/2.0", "cpu/2.3", "cpu/2.5",
                                        pytest.param("cuda/2.0", marks=[pytest.mark.gpu, two_gpus]),
                                        pytest.param("cuda/2.3", marks=[pytest.mark.gpu, two_gpus])])
def launch(request: pytest.FixtureRequest, tiny_of: Any) -> tuple[str, str]:
    """(where the ranks and the one-process reference train: the CPU (gloo), or GPUs (NCCL; the reference on
    GPU 0), the tiny model's flavour)."""
    device, flavour = request.param.split("/")
    tiny_of(flavour)  # built once, before two ranks would race to build it
    return device, flavour


@pytest.fixture(scope="module")
def device(launch: tuple[str, str]) -> str:
    return launch[0]


@pytest.fixture(scope="module")
def flavour(launch: tuple[str, str]) -> str:
    return launch[1]


@pytest.fixture(scope="module")
def two_ranks(device: str, flavour: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder distributed_ranks.py trained into, on two ranks."""
    out = tmp_path_factory.mktemp(f"two-ranks-{device}-{flavour}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks.RANKS}",
               "-m", "tests.ltx2core.training.distributed_ranks", str(out), device, flavour]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    if done.returncode != 0:
        pytest.fail(f"torchrun exited with {done.returncode}:\n{(done.stdout + done.stderr)[-6000:]}")
    return out


@pytest.fixture(scope="module")
def reference(device: str, flavour: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One process, gradient accumulation 2: the same global batch as two ranks with accumulation 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        transformer = ranks.lora_transformer(device=device, flavour=flavour)
        source = ranks.MemorySource(ranks.examples(flavour))
        ranks.run(transformer, tmp_path_factory.mktemp(f"reference-{device}-{flavour}"), ranks.STEPS,
                  accumulation=ranks.RANKS, source=source, device=device, flavour=flavour)
    finally:
        torch.set_num_threads(threads)
    return {"lora": lora_state_dict(transformer), "served": [list(keys) for keys in source.served]}


def _lora(folder: Path) -> dict[str, torch.Tensor]:
    state = load_file(folder / "pytorch_lora_weights.safetensors")
    return {key.removeprefix("transformer."): value for key, value in state.items()}


def _max_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    assert first.keys() == second.keys()
    return max((first[key] - second[key]).abs().max().item() for key in first)


def _rank_files(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(ranks.RANKS)]


def test_two_ranks_train_the_lora_of_one_process_with_the_same_global_batch(two_ranks, reference) -> None:
    lora = _lora(checkpoint_folder(two_ranks / "straight", ranks.STEPS))
    assert _max_difference(lora, reference["lora"]) <= DATA_PARALLEL_ATOL
    assert any(value.abs().sum() > 0 for key, value in lora.items() if "lora_B" in key)  # it trained


def test_each_rank_trains_its_own_batches_of_one_bucket_per_step(two_ranks, reference) -> None:
    order = ranks.batches()
    steps = [order.next_step(ranks.RANKS) for _ in range(ranks.STEPS)]
    assert any(len(step) < ranks.RANKS for step in steps)  # the data leaves rank 1 without a clip at least once
    assert all(len({batch.bucket for batch in step}) == 1 for step in steps)
    # rank r loads batch r of every step, or the step's first batch as its weight-0 stand-in when there is none
    for rank, loaded in enumerate(_rank_files(two_ranks)):
        expected = [list(step[rank].keys if rank < len(step) else step[0].keys) for step in steps]
        assert loaded["served"]["straight"] == expected
    assert reference["served"] == [list(batch.keys) for step in steps for batch in step]  # no stand-ins alone


def test_a_resumed_two_rank_run_continues_exactly(two_ranks) -> None:
    straight = _lora(checkpoint_folder(two_ranks / "straight", ranks.STEPS))
    resumed = _lora(checkpoint_folder(two_ranks / "resumed", ranks.STEPS))
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    for loaded in _rank_files(two_ranks):  # the same batches, in the same order, across the interruption
        assert loaded["served"]["resumed"] == loaded["served"]["straight"]


def test_the_ranks_ran_where_the_launch_asked(two_ranks, device) -> None:
    expected = [("gloo", "cpu") if device == "cpu" else ("nccl", f"cuda:{rank}") for rank in range(ranks.RANKS)]
    assert [(loaded["backend"], loaded["device"]) for loaded in _rank_files(two_ranks)] == expected


def test_fsdp2_with_gradient_checkpointing_trains_the_same_lora(two_ranks, reference) -> None:
    assert all(loaded["sharded"] for loaded in _rank_files(two_ranks))
    lora = _lora(checkpoint_folder(two_ranks / "fsdp", ranks.STEPS))
    assert _max_difference(lora, reference["lora"]) <= FSDP_ATOL


def test_validation_samples_once_with_ddp_and_on_every_rank_with_fsdp(two_ranks) -> None:
    samples = {path.stem: torch.load(path) for path in two_ranks.glob("*-sample-rank*.pt")}
    assert sorted(samples) == ["fsdp-sample-rank0", "fsdp-sample-rank1", "straight-sample-rank0"]
    ddp, fsdp = samples["straight-sample-rank0"], samples["fsdp-sample-rank0"]
    assert ddp.shape == (ranks.VALIDATION.num_frames, 64, 64, 3) and ddp.dtype == torch.uint8
    assert torch.equal(fsdp, samples["fsdp-sample-rank1"])  # the ranks sampled alike
    assert (fsdp.int() - ddp.int()).abs().max().item() <= SAMPLE_LEVELS


def test_a_two_rank_checkpoint_resumes_on_one_process(two_ranks, flavour, tmp_path, caplog) -> None:
    # The same config on one process: the global batch halves, so the epoch's remaining order is cut anew.
    # On the CPU, also after two GPUs: a checkpoint holds no random state that would tie it to its devices.
    shutil.copytree(two_ranks / "resumed", tmp_path, dirs_exist_ok=True)
    shutil.rmtree(checkpoint_folder(tmp_path, ranks.STEPS))
    source = ranks.MemorySource(ranks.examples(flavour))
    with caplog.at_level(logging.WARNING, logger="ltx2core.training.data"):
        result = ranks.run(ranks.lora_transformer(seed=99, flavour=flavour), tmp_path, ranks.STEPS, source=source,
                           resume_from=checkpoint_folder(tmp_path, ranks.RESUME_AT), flavour=flavour)
    assert result.step == ranks.STEPS and result.steps_run == ranks.STEPS - ranks.RESUME_AT
    assert "steps took 2 batches of 1 clips, now 1" in caplog.text
    # it continues where BucketBatches puts a two-batch position at one batch per step
    order = ranks.batches()
    for _ in range(ranks.RESUME_AT):
        order.next_step(ranks.RANKS)
    expected = [list(order.next_step(1)[0].keys) for _ in range(ranks.STEPS - ranks.RESUME_AT)]
    assert [list(keys) for keys in source.served] == expected
    assert checkpoint_folder(tmp_path, ranks.STEPS).is_dir()


# ---- the pieces, without processes


def test_a_step_takes_batches_of_one_bucket_and_an_epoch_keeps_every_repeat() -> None:
    buckets = {"a": [("a1", 0), ("a2", 2), ("a3", 0), ("a4", 1)], "b": [("b1", 0), ("b2", 4)], "c": [("c1", 0)]}
    batches = BucketBatches(buckets, batch_size=2, seed=4)
    steps = [batches.next_step(3) for _ in range(batches.steps_per_epoch(3))]
    assert len(steps) == 4  # a: 7 clips, b: 6, c: 1 -> ceil(7/6) + 1 + 1
    for step in steps:
        assert len({batch.bucket for batch in step}) == 1
        assert all(len(batch.keys) == 2 for batch in step[:-1]) and 1 <= len(step) <= 3
    clips = [key for step in steps for batch in step for key in batch.keys]
    assert sorted(clips) == sorted(key for samples in buckets.values() for key, repeats in samples
                                   for _ in range(1 + repeats))


def test_a_position_saved_with_another_step_size_continues_at_the_same_fraction_of_the_epoch(caplog) -> None:
    buckets = {"a": [(f"a{i}", 0) for i in range(12)], "b": [(f"b{i}", 0) for i in range(4)]}
    two_gpus = BucketBatches(buckets, batch_size=1, seed=0)
    for _ in range(4):  # half of the 8 steps of 2 batches
        two_gpus.next_step(2)
    one_gpu = BucketBatches(buckets, batch_size=1, seed=0)
    one_gpu.restore(two_gpus.position)
    with caplog.at_level(logging.WARNING, logger="ltx2core.training.data"):
        one_gpu.next_step(1)
    assert one_gpu.position == {"epoch": 0, "index": 9, "batches_per_step": 1}  # step 8 of 16 was next
    assert "epoch 0 continues at step 8 of 16" in caplog.text
    old = BucketBatches(buckets, batch_size=1, seed=0)
    old.restore({"epoch": 1, "index": 3})  # a checkpoint written before steps took several batches
    assert old.position == {"epoch": 1, "index": 3, "batches_per_step": 1}


def test_one_process_needs_no_group(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    param = torch.nn.Parameter(torch.ones(3))
    sum_gradients([param], SINGLE)
    assert param.grad is None  # nothing to sum with
    assert process_count(None, torch.device("cpu")) == 1 and process_count(2, torch.device("cpu")) == 2


def test_multi_gpu_config_keys_are_checked(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"fsdp_enable": True, "fsdp_version": 1, "num_processes": 1,
                                "base_model_precision": "fp8-e4m3fn", "fsdp_state_dict_type": "SHARDED_STATE_DICT"}))
    with pytest.raises(ConfigError) as error:
        load_train_config(path)
    text = str(error.value)
    assert "fsdp_version 1 is not supported" in text
    path.write_text(json.dumps({"fsdp_enable": True, "num_processes": 1, "base_model_precision": "fp8-e4m3fn"}))
    with pytest.raises(ConfigError) as error:
        load_train_config(path)
    assert "num_processes is 1" in str(error.value) and "float8 base weights are not sharded" in str(error.value)
    path.write_text(json.dumps({"fsdp_enable": True, "num_processes": 2, "fsdp_reshard_after_forward": False,
                                "fsdp_state_dict_type": "SHARDED_STATE_DICT"}))
    loaded = load_train_config(path)
    assert loaded.config.num_processes == 2 and not loaded.config.fsdp_reshard_after_forward
    assert any("fsdp_state_dict_type" in warning for warning in loaded.warnings)  # SimpleTuner's, not used here
