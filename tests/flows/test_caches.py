"""The two cache stages on the tiny model: text-embeds and latents, through the real flow and store."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from flows.pipeline import pipeline
from ltx2core.data.tensors import from_record
from ltx2core.media.synth import write_tone
from ltx2core.models.scale import LTX2
from ltx2core.models.text import CaptionEmbedding
from storage.store import Store
from tasks.artifacts import artifact_key
from tests.flows.helpers import KEPT, make_dataset, write_configs

CACHE_STAGES = ["probe", "filter", "bucket", "captions", "text-embeds", "latents"]
TEXT_STAGES = CACHE_STAGES[:-1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("cache-clips") / "videos")


@pytest.fixture
def work(tmp_path, clips, prefect_api, tiny):
    data = shutil.copytree(clips, tmp_path / "videos")
    config, backend = write_configs(tmp_path, data)
    return {"root": tmp_path, "data": data, "config": str(config), "backend": str(backend),
            "storage": str(tmp_path / "store")}


def _artifacts_of_last_run() -> dict:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        last = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        runs = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[last.id]))
        found = client.read_artifacts(artifact_filter=runs)
    return {a.key: a for a in found if a.key}


def _audio_project(work, name: str, audio: dict | None = None, **train) -> Path:
    """The work's clips as an audio dataset (silence for the clips without sound), trained into output/<name>;
    `train` overrides config.json keys. Returns the output folder."""
    config, _ = write_configs(work["root"], work["data"], audio={"sample_rate": 16000, "channels": 2,
                                                                 "allow_zero_audio": True} | (audio or {}))
    out = work["root"] / "output" / name
    config.write_text(json.dumps(json.loads(config.read_text()) | {
        "output_dir": str(out), "max_train_steps": 2, "lora_rank": 4, "mixed_precision": "no"} | train))
    return out


def run(work, stages: list[str] = CACHE_STAGES, **kw) -> dict[tuple[str, str], dict]:
    reports = pipeline(config=work["config"], databackend=work["backend"], storage=work["storage"],
                       stages=stages, **kw)
    return {(r["stage"], r["scope"]): r for r in reports}


def test_cache_stages_write_one_row_per_distinct_caption_and_clip(work):
    (work["data"] / "ntsc.txt").write_text("clip beach")  # same caption as beach.mp4: encoded once
    reports = run(work)
    store = Store.open(work["storage"])
    embeds = store.read("text_embeds").to_pylist()
    assert sorted(r["caption"] for r in embeds) == ["clip beach", "clip portrait"]
    assert reports[("text-embeds", "*")]["done"] == 2
    for r in embeds:
        features = from_record(r["features"], r["features_shape"], r["features_dtype"])
        assert features.shape == (r["num_tokens"], 32) and torch.isfinite(features).all()

    samples = {Path(s["path"]).name: s for s in store.read("samples").to_pylist() if s["kept"]}
    latents = store.read("latents").to_pylist()
    assert len(latents) == len(KEPT) and all(r["error"] is None for r in latents)
    by_bucket = {r["bucket"]: r for r in latents}
    for name in KEPT:
        s = samples[name]
        row = by_bucket[s["bucket"]]
        z = from_record(row["latents"], row["latents_shape"], row["latents_dtype"])
        assert tuple(z.shape[1:]) == (LTX2.latent_frames(s["num_frames"]), s["height"] // LTX2.spatial,
                                      s["width"] // LTX2.spatial)
        assert row["frame_rate"] == 25.0 and row["audio_latents"] is None  # video-only dataset: no audio work

    # what the run shows in the UI: a summary per stage, progress of the long stages, the tables it left
    artifacts = _artifacts_of_last_run()
    assert {artifact_key("stage", stage, scope) for stage, scope in reports} <= set(artifacts)
    assert "stage-probe" in artifacts  # the "*" scope (every dataset) leaves no trace in the key
    assert "| failed or rejected | 2 |" in artifacts["stage-filter-clips"].data
    assert "| longer than max_frames | 1 |" in artifacts["stage-filter-clips"].data
    assert artifacts["progress-latents-clips"].type == "progress" and artifacts["progress-latents-clips"].data == 100
    versions = store.versions(["latents", "text_embeds", "samples"])
    for table, version in versions.items():
        assert f"| {table} | {version} |" in artifacts["storage"].data
    assert work["storage"] in artifacts["storage"].data


def test_rerun_of_the_cache_stages_is_a_noop(work):
    run(work)
    store = Store.open(work["storage"])
    before = store.versions(["text_embeds", "latents"])
    again = run(work)
    assert again[("text-embeds", "*")]["up_to_date"] and again[("latents", "clips")]["up_to_date"]
    assert store.versions(["text_embeds", "latents"]) == before


def test_text_embeds_keeps_each_written_chunk_when_encoding_fails_and_a_forced_run_rewrites_rows(work, monkeypatch,
                                                                                                  caplog):
    import tasks.text_embeds as stage

    (work["data"] / "ntsc.txt").write_text("clip ntsc")  # three distinct captions: three chunks of one
    monkeypatch.setattr(stage, "COMMIT_EVERY", 1)
    encode, calls = stage.encode_captions, []

    def out_of_memory_after_the_first(captions, **kw):  # a GPU running out mid-stage (no GPU here to fill)
        calls.append(captions)
        if len(calls) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return encode(captions, **kw)

    monkeypatch.setattr(stage, "encode_captions", out_of_memory_after_the_first)
    with pytest.raises(Exception, match="out of memory"):
        run(work, TEXT_STAGES)
    store = Store.open(work["storage"])
    # the first chunk (the shortest caption) was written while the second encoded; the failure waited for it
    assert [r["caption"] for r in store.read("text_embeds").to_pylist()] == calls[0] == ["clip ntsc"]

    monkeypatch.setattr(stage, "encode_captions", encode)
    assert run(work, TEXT_STAGES)[("text-embeds", "*")]["done"] == 2  # the two that failed; the stored one is kept
    stored = {r["caption"]: _features(r) for r in store.read("text_embeds").to_pylist()}
    assert sorted(stored) == ["clip beach", "clip ntsc", "clip portrait"]

    # a forced run replaces what is stored with what it computes (here: another encoder's numbers)
    monkeypatch.setattr(stage, "encode_captions", lambda captions, **kw: [
        CaptionEmbedding(e.features * 2) for e in encode(captions, **kw)])
    assert run(work, TEXT_STAGES, force=["text-embeds"])[("text-embeds", "*")]["done"] == 3
    # where the shard's seconds went, for the UI's log (the rate past the first chunk is what a big dataset gets)
    assert re.search(r"3 captions: models loaded in [\d.]+ s, first 1 encoded in [\d.]+ s, the next 2 at "
                     r"[\d.]+ captions/s, last write [\d.]+ s", caplog.text)
    for row in store.read("text_embeds").to_pylist():
        assert torch.equal(_features(row), stored[row["caption"]] * 2)


def _features(row: dict) -> torch.Tensor:
    return from_record(row["features"], row["features_shape"], row["features_dtype"])


def test_another_text_encoder_recomputes_every_text_embedding_and_nothing_else(work, tiny):
    run(work)
    # A copy of the tiny model whose text encoder differs by one weight.
    other = shutil.copytree(tiny.name_or_path, work["root"] / "tiny-other")
    weights = next((other / "text_encoder").glob("*.safetensors"))
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights, metadata={"format": "pt"})
    config = json.loads(Path(work["config"]).read_text()) | {"pretrained_model_name_or_path": str(other)}
    Path(work["config"]).write_text(json.dumps(config))

    reports = run(work)
    assert reports[("text-embeds", "*")]["done"] == 3
    assert reports[("latents", "clips")]["up_to_date"]
    assert all(reports[(s, sc)]["up_to_date"] for s, sc in reports if s not in ("text-embeds",))


def test_a_dataset_with_audio_caches_audio_latents(work):
    config, backend = write_configs(work["root"], work["data"], audio={"sample_rate": 16000, "channels": 2,
                                                                       "allow_zero_audio": True})
    run(work)
    rows = Store.open(work["storage"]).read("latents").to_pylist()
    assert len(rows) == len(KEPT)
    for r in rows:
        audio = from_record(r["audio_latents"], r["audio_latents_shape"], r["audio_latents_dtype"])
        assert audio.ndim == 2 and audio.shape[1] == 4 and torch.isfinite(audio).all()  # tiny: 2 channels x 2 mel


def test_an_audio_dataset_trains_both_modalities_with_the_auto_weight_and_shows_both_losses(work):
    out = _audio_project(work, "av", max_train_steps=3, audio_loss_weight="auto")
    reports = pipeline(config=work["config"], databackend=work["backend"], storage=work["storage"],
                       stages=[*CACHE_STAGES, "train"])
    assert [r["done"] for r in reports if r["stage"] == "train"] == [3]
    with (out / "loss.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(float(r["audio_loss"]) > 0 and float(r["video_loss"]) > 0 for r in rows)
    assert float(rows[0]["audio_weight"]) == 1.0 and float(rows[-1]["audio_weight"]) != 1.0  # auto, once known
    train = next(a for key, a in _artifacts_of_last_run().items() if key.startswith("train-"))
    assert "audio loss" in train.data and "audio weight" in train.data


@pytest.mark.parametrize("mode", ["video_to_audio", "audio_to_video"])
def test_the_audio_conditioned_modes_train_from_the_pipeline(work, mode):
    out = _audio_project(work, mode, audio_video_mode=mode)
    config = Path(work["config"])
    reports = pipeline(config=work["config"], databackend=work["backend"], storage=work["storage"],
                       stages=[*CACHE_STAGES, "train"])
    assert [r["done"] for r in reports if r["stage"] == "train"] == [2]
    with (out / "loss.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if mode == "video_to_audio":  # the loss is the audio's alone
        assert all(float(r["video_loss"]) == 0 and float(r["loss"]) == float(r["audio_loss"]) > 0 for r in rows)
    else:  # the loss is the video's alone; no audio loss is computed
        assert all(r["audio_loss"] == "" and float(r["loss"]) == float(r["video_loss"]) > 0 for r in rows)
    # Validation on the eval clips: foley keeps each clip's frames and generates its sound; audio_to_video keeps
    # each clip's sound and generates its frames -- each with the condition clean, as trained.
    config.write_text(json.dumps(json.loads(config.read_text()) | {
        "validation_using_datasets": True, "eval_dataset_id": "clips", "validation_num_inference_steps": 2}))
    (report,) = pipeline(config=work["config"], databackend=work["backend"], storage=work["storage"],
                         stages=["validate"])
    rows = Store.open(work["storage"]).read("validations").to_pylist()
    assert report["done"] == len(rows) >= 1
    assert {r["mode"] for r in rows} == {"v2a" if mode == "video_to_audio" else "a2v"}
    for row in rows:
        with av.open(row["video_path"]) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert (video.width, video.height) == (row["width"], row["height"]) and video.frames > 1 and audio


def test_an_audio_only_dataset_encodes_no_video_and_trains_an_audio_lora(work):
    out = _audio_project(work, "audio", {"audio_only": True}, audio_video_mode="audio_only")
    config = Path(work["config"])
    # Sound files beside the videos: the audio-only dataset trains on them too, cut like clips at its frame rate.
    sounds = {"rain.wav": 2.0, "birds.mp3": 2.0, "click.flac": 0.5}  # click: 12 frames at 25 fps < min_frames 33
    for name, seconds in sounds.items():
        write_tone(work["data"] / name, duration_s=seconds, sample_rate=44100 if name == "birds.mp3" else 48000)
        (work["data"] / name).with_suffix(".txt").write_text(f"the sound of {Path(name).stem}")
    reports = pipeline(config=work["config"], databackend=work["backend"], storage=work["storage"],
                       stages=[*CACHE_STAGES, "train"])
    assert [r["done"] for r in reports if r["stage"] == "train"] == [2]
    store = Store.open(work["storage"])
    samples = {Path(r["path"]).name: r for r in store.read("samples").to_pylist()}
    assert samples["rain.wav"]["bucket"] == samples["birds.mp3"]["bucket"] == "64x64@33"
    assert samples["click.flac"]["reason"] == "12 frames at 25 fps < min_frames 33"
    latents = store.read("latents").to_pylist()
    assert len(latents) == len(KEPT) + 2 and all(r["error"] is None for r in latents)
    audio = {}
    for r in latents:
        video = from_record(r["latents"], r["latents_shape"], r["latents_dtype"])
        assert video.shape[2:] == (1, 1) and not video.any()  # zeros stand for the video: nothing was encoded
        audio[r["video_id"]] = from_record(r["audio_latents"], r["audio_latents_shape"], r["audio_latents_dtype"])
        assert audio[r["video_id"]].ndim == 2
    silent = next(r["video_id"] for r in store.read("videos").to_pylist() if r["has_audio"] is False)
    assert not torch.equal(audio[samples["rain.wav"]["video_id"]], audio[silent])  # the tone was encoded
    lora = load_file(out / "pytorch_lora_weights.safetensors")
    assert lora and all(".audio_attn1." in k or ".audio_attn2." in k for k in lora)

    # Its validation: audio samples, as an mp4 of a still frame and a .wav, from the audio stream alone.
    config.write_text(json.dumps(json.loads(config.read_text()) | {
        "validation_prompt": "rain on a tin roof", "validation_num_video_frames": 9,
        "validation_num_inference_steps": 2}))
    (report,) = pipeline(config=work["config"], databackend=work["backend"], storage=work["storage"],
                         stages=["validate"])
    assert report["done"] == 1
    (row,) = Store.open(work["storage"]).read("validations").to_pylist()
    assert row["mode"] == "audio" and (row["width"], row["height"]) == (64, 64)
    wav = Path(row["video_path"]).with_suffix(".wav")
    with av.open(str(wav)) as container:
        (stream,) = container.streams.audio
        samples = np.concatenate([f.to_ndarray() for f in container.decode(stream)], axis=1)
    assert stream.rate == 16000 and samples.size and np.abs(samples).max() > 0  # the tiny vocoder's rate
    with av.open(row["video_path"]) as container:
        assert container.streams.video[0].width == 64 and container.streams.audio

    config.write_text(json.dumps(json.loads(config.read_text()) | {"audio_video_mode": "joint"}))
    with pytest.raises(Exception, match="audio-only .audio.audio_only., which trains with audio_video_mode audio_only"):
        pipeline(config=work["config"], databackend=work["backend"], storage=work["storage"], stages=["train"])

    # The same folder as a video dataset: each sound file is rejected, by name and why, not trained as silence.
    write_configs(work["root"], work["data"])
    (report,) = pipeline(config=work["config"], databackend=work["backend"], storage=work["storage"],
                         stages=["filter"])
    assert report["reasons"]["sound file (no picture)"] == len(sounds)
    for name in sounds:
        reason = Store.open(work["storage"]).read("samples", where=f"path LIKE '%/{name}'").to_pylist()[0]["reason"]
        assert reason.startswith("a sound file with no picture: only an audio-only dataset"), reason


@pytest.mark.parametrize("flavour", ["2.0", "2.3", "2.5"])
def test_an_ic_lora_dataset_caches_each_clip_s_reference_trains_and_validates_with_it(tmp_path, prefect_api,
                                                                                     tiny_of, flavour):
    from ltx2core.media.synth import write_clip

    tiny_of(flavour)

    clips, refs = tmp_path / "clips", tmp_path / "refs"
    for folder, seed in ((clips, 0), (refs, 10)):
        folder.mkdir()
        for i, name in enumerate(("a.mp4", "b.mp4", "c.mp4")):
            if folder == refs and name == "c.mp4":
                continue  # c has no reference: its clip is recorded as an error and not trained
            write_clip(folder / name, width=128, height=128, num_frames=40, fps=25, seed=seed + i)
            (folder / name).with_suffix(".txt").write_text(f"clip {name}")
    for stem in ("a", "c"):  # sound files named like clips are no references (a keeps a.mp4; c still has none)
        write_tone(refs / f"{stem}.wav", duration_s=2.0)
    config, backend = write_configs(tmp_path, clips, block={"conditioning_data": "refs"})
    blocks = json.loads(backend.read_text())
    backend.write_text(json.dumps([*blocks, {"id": "refs", "dataset_type": "conditioning",
                                             "conditioning_type": "reference_strict",
                                             "instance_data_dir": str(refs)}]))
    out = tmp_path / "output" / "ic"
    config.write_text(json.dumps(json.loads(config.read_text()) | {
        "output_dir": str(out), "max_train_steps": 2, "lora_rank": 4, "mixed_precision": "no",
        "ltx2_reference_spatial_scale_factor": 2, "model_flavour": flavour, "validation_using_datasets": True,
        "eval_dataset_id": "clips", "validation_resolution": "64x64", "validation_num_video_frames": 9,
        "validation_num_inference_steps": 2}))
    store_uri = str(tmp_path / "store")
    reports = pipeline(config=str(config), databackend=str(backend), storage=store_uri,
                       stages=[*CACHE_STAGES, "train", "validate"])
    assert [r["done"] for r in reports if r["stage"] == "train"] == [2]
    validations = Store.open(store_uri).read("validations").to_pylist()
    assert sorted(v["mode"] for v in validations) == ["ic", "ic"]  # the two clips that have a reference
    rows = Store.open(store_uri).read("latents").to_pylist()
    (missing,) = [r["error"] for r in rows if r["error"]]
    assert "c.mp4: no reference video c.* in" in missing
    encoded = [r for r in rows if r["error"] is None]
    assert len(encoded) == 2
    for r in encoded:
        video = from_record(r["latents"], r["latents_shape"], r["latents_dtype"])
        reference = from_record(r["reference_latents"], r["reference_latents_shape"], r["reference_latents_dtype"])
        assert video.shape[1:] == (5, 2, 2) and reference.shape[1:] == (5, 1, 1)  # 64x64 clips, 32x32 references


def test_reference_strict_refuses_a_reference_of_another_aspect_and_reference_loose_crops_it(tmp_path, prefect_api,
                                                                                             tiny):
    from ltx2core.media.synth import write_clip

    clips, refs = tmp_path / "clips", tmp_path / "refs"
    clips.mkdir(), refs.mkdir()
    write_clip(clips / "a.mp4", width=128, height=128, num_frames=40, fps=25, seed=0)
    write_clip(refs / "a.mp4", width=192, height=128, num_frames=40, fps=25, seed=1)  # 3:2 for a square clip
    config, backend = write_configs(tmp_path, clips, block={"conditioning_data": "refs"})
    blocks = json.loads(backend.read_text())
    store_uri = str(tmp_path / "store")

    def latents(fit: str) -> dict:
        backend.write_text(json.dumps([*blocks, {"id": "refs", "dataset_type": "conditioning",
                                                 "conditioning_type": fit, "instance_data_dir": str(refs)}]))
        pipeline(config=str(config), databackend=str(backend), storage=store_uri, stages=CACHE_STAGES)
        rows = Store.open(store_uri).read("latents").to_pylist()
        return max(rows, key=lambda r: r["error"] is None)  # the loose row, once there is one

    strict = latents("reference_strict")
    assert strict["error"] and "a.mp4 is 192x128, of another aspect than the clip" in strict["error"]
    assert 'set "conditioning_type": "reference_loose" on refs' in strict["error"]
    loose = latents("reference_loose")
    assert loose["error"] is None
    reference = from_record(loose["reference_latents"], loose["reference_latents_shape"],
                            loose["reference_latents_dtype"])
    video = from_record(loose["latents"], loose["latents_shape"], loose["latents_dtype"])
    assert reference.shape == video.shape  # covered and centre-cropped to the clip's bucket
