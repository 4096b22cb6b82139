"""Arrow schemas of the pipeline's tables.

Column names are a contract (docs: design.md): other machines and tools read these tables.
Add columns freely; never rename or retype one.

Every table has exactly one key column: a non-nullable string declared as Lance's *unenforced
primary key*. The declaration is what makes two overlapping `merge_insert` commits detect each
other instead of both inserting the same new key (measured: without it, 4 writers on 200 shared
keys left 7-15 duplicated keys; with it, none). It is written into the schema at creation, so
the table never exists without it. Never build a BTree index on a key column: with an index
Lance's merge path skips that conflict check and duplicates come back (research, section 2d).

Tensor columns (for `text_embeds` and `latents`) follow one convention, built by
`tensor_fields(name)`:

    <name>        large_binary, field metadata lance-encoding:compression=none
                  (the raw C-order bytes; compressing random floats saves ~8 % and halves reads)
    <name>_shape  list<int32>   the tensor's shape
    <name>_dtype  string        a torch dtype name without the prefix: "float32", "float16",
                                "bfloat16", ...

Arrow has no bfloat16, so a bf16 tensor is stored as its raw uint16 bits
(`t.view(torch.uint16)`) with dtype "bfloat16", and read back bit-exact with
`torch.frombuffer(buf, dtype=torch.uint16).view(torch.bfloat16).reshape(shape)`. One row can
hold several tensors (video and audio latents) under different names; a missing tensor is null.
Binary + shape, not fixed_size_list, because buckets give tensors of different shapes in one
table and nested fixed-size lists crash Lance's default file format.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# How Lance records an unenforced primary key in Arrow field metadata (what
# `LanceTable.set_unenforced_primary_key` writes); setting it at creation saves a commit.
PRIMARY_KEY_METADATA = {"lance-schema:unenforced-primary-key:position": "1"}
NO_COMPRESSION_METADATA = {"lance-encoding:compression": "none"}

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: str
    schema: pa.Schema

    @property
    def required(self) -> tuple[str, ...]:
        """Columns that may not be null: an inserted row must carry them."""
        return tuple(f.name for f in self.schema if not f.nullable)


def _key(name: str) -> pa.Field:
    return pa.field(name, pa.string(), nullable=False, metadata=PRIMARY_KEY_METADATA)


def _spec(name: str, key: str, *fields: pa.Field) -> TableSpec:
    return TableSpec(name=name, key=key, schema=pa.schema([_key(key), *fields]))


def tensor_fields(name: str) -> list[pa.Field]:
    """The three nullable columns that hold one tensor (see the module docstring)."""
    return [
        pa.field(name, pa.large_binary(), metadata=NO_COMPRESSION_METADATA),
        pa.field(f"{name}_shape", pa.list_(pa.int32())),
        pa.field(f"{name}_dtype", pa.string()),
    ]


# path + size + mtime -> content hash, so a file's bytes are hashed once.
FILES = _spec(
    "files",
    "path",
    pa.field("size", pa.int64(), nullable=False),
    pa.field("mtime_ns", pa.int64(), nullable=False),
    pa.field("video_id", pa.string()),  # null when the file could not be read
    pa.field("error", pa.string()),
)

# One probed video per content hash; numbers are null on rows whose `error` is set.
VIDEOS = _spec(
    "videos",
    "video_id",
    pa.field("path", pa.string(), nullable=False),
    pa.field("width", pa.int64()),
    pa.field("height", pa.int64()),
    pa.field("coded_width", pa.int64()),
    pa.field("coded_height", pa.int64()),
    pa.field("fps", pa.float64()),
    pa.field("fps_num", pa.int64()),
    pa.field("fps_den", pa.int64()),
    pa.field("num_frames", pa.int64()),
    pa.field("duration_s", pa.float64()),
    pa.field("rotation", pa.int64()),
    pa.field("has_audio", pa.bool_()),
    pa.field("audio_sample_rate", pa.int64()),
    pa.field("audio_channels", pa.int64()),
    pa.field("codec", pa.string()),
    pa.field("size_bytes", pa.int64()),
    pa.field("error", pa.string()),
)

# Written by `filter` (kept/reason); the bucket columns stay null until `bucket` fills them.
SAMPLES = _spec(
    "samples",
    "sample_id",
    pa.field("dataset_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("kept", pa.bool_(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("frames_at_rate", pa.int64()),  # null when the video's frame count is unknown
    pa.field("repeats", pa.int64(), nullable=False),
    pa.field("filter_fp", pa.string(), nullable=False),
    pa.field("bucket", pa.string()),  # "WxH@F"
    pa.field("width", pa.int64()),
    pa.field("height", pa.int64()),
    pa.field("num_frames", pa.int64()),
    pa.field("start_frame", pa.int64()),
    pa.field("frame_rate", pa.float64()),
    pa.field("resize_width", pa.int64()),
    pa.field("resize_height", pa.int64()),
    pa.field("crop_left", pa.int64()),
    pa.field("crop_top", pa.int64()),
    pa.field("bucket_fp", pa.string()),
)

CAPTIONS = _spec(
    "captions",
    "sample_id",
    pa.field("dataset_id", pa.string(), nullable=False),
    pa.field("caption", pa.string()),  # null when no caption could be made; `reason` says why
    pa.field("reason", pa.string()),
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_fp", pa.string(), nullable=False),
)

# One row per finished stage run (history kept); `versions` is JSON {table: version}.
STAGE_RUNS = _spec(
    "stage_runs",
    "run_key",
    pa.field("stage", pa.string(), nullable=False),
    pa.field("scope", pa.string(), nullable=False),  # dataset id, or "*" for the whole store
    pa.field("fingerprint", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # "completed" | "failed"
    pa.field("done", pa.int64(), nullable=False),
    pa.field("skipped", pa.int64(), nullable=False),
    pa.field("failed", pa.int64(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("versions", pa.string(), nullable=False),
    pa.field("flow_run_id", pa.string()),
    pa.field("started_at", UTC_TIMESTAMP, nullable=False),
    pa.field("finished_at", UTC_TIMESTAMP, nullable=False),
)

# Compact caption features (text_proj_in output of the real tokens), keyed by
# hash(caption, text encoder fingerprint, max length): identical captions are encoded once.
TEXT_EMBEDS = _spec(
    "text_embeds",
    "key",
    pa.field("caption", pa.string(), nullable=False),
    pa.field("encoder_fp", pa.string(), nullable=False),
    pa.field("max_length", pa.int64(), nullable=False),
    pa.field("num_tokens", pa.int64(), nullable=False),
    *tensor_fields("features"),
)

# VAE latents of one clip, keyed by hash(video_id, clip spec, bucket, VAE fingerprint, options).
LATENTS = _spec(
    "latents",
    "key",
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("clip_spec", pa.string(), nullable=False),
    pa.field("bucket", pa.string(), nullable=False),
    pa.field("vae_fp", pa.string(), nullable=False),
    pa.field("options", pa.string(), nullable=False),  # VAE options cache key, plus the audio request
    pa.field("frame_rate", pa.float64(), nullable=False),  # the clip's fps after resampling: RoPE needs it
    pa.field("error", pa.string()),  # null when encoded; a clip that could not be decoded says why
    *tensor_fields("latents"),  # [C, F', H', W'] normalised posterior mean
    *tensor_fields("logvar"),  # [1, F', H', W'] (the encoder shares one log-variance across channels)
    *tensor_fields("audio_latents"),  # [T, C*M] packed and normalised; null for video-only datasets
    *tensor_fields("reference_latents"),  # [C, F', H'/s, W'/s] IC-LoRA reference; null without conditioning_data
)

# One row per saved checkpoint of a training run: the LoRA itself (diffusers safetensors bytes), so another
# machine can validate or use it; optimizer and RNG state stay in the run's output folder for resuming.
CHECKPOINTS = _spec(
    "checkpoints",
    "key",  # "<run_id>/<step, 6 digits>"
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("step", pa.int64(), nullable=False),
    pa.field("lora", pa.large_binary(), nullable=False, metadata=NO_COMPRESSION_METADATA),
    pa.field("lora_path", pa.string(), nullable=False),  # the checkpoint folder on the training machine
    pa.field("loss", pa.float64()),  # mean loss of the step that ended at this checkpoint
    pa.field("created_at", UTC_TIMESTAMP, nullable=False),
    # Last: tables from before it get it appended (Store._add_missing_columns).
    pa.field("flavour", pa.string()),  # model_flavour trained on; null in rows from before 2.3 (all 2.0)
)

# One validation sample: keyed by hash(run, step, mode, prompt, resolution, seed, settings).
VALIDATIONS = _spec(
    "validations",
    "key",
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("step", pa.int64(), nullable=False),  # the checkpoint's step; 0 with lora false = the base model
    pa.field("mode", pa.string(), nullable=False),  # "t2v" | "i2v"
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("width", pa.int64(), nullable=False),
    pa.field("height", pa.int64(), nullable=False),
    pa.field("lora", pa.bool_(), nullable=False),
    pa.field("settings", pa.string(), nullable=False),  # JSON: guidance, steps, frames, frame rate, model
    pa.field("video_path", pa.string(), nullable=False),  # where the .mp4 was written
    pa.field("video", pa.large_binary(), nullable=False, metadata=NO_COMPRESSION_METADATA),  # the .mp4 bytes
    pa.field("created_at", UTC_TIMESTAMP, nullable=False),
)

# Who writes to this store now: one row per lease (storage/lease.py), inserted only if absent, so of two
# runs that start together one gets it. Not data: no stage reads it.
LEASES = _spec(
    "leases",
    "name",
    pa.field("holder", pa.string(), nullable=False),  # a random id per holding run
    pa.field("host", pa.string(), nullable=False),
    pa.field("pid", pa.int64(), nullable=False),
    pa.field("flow_run_id", pa.string()),
    pa.field("since", UTC_TIMESTAMP, nullable=False),
    pa.field("heartbeat", UTC_TIMESTAMP, nullable=False),  # renewed while the holder lives
)

TABLES: dict[str, TableSpec] = {
    s.name: s for s in (FILES, VIDEOS, SAMPLES, CAPTIONS, STAGE_RUNS, TEXT_EMBEDS, LATENTS, CHECKPOINTS, VALIDATIONS,
                        LEASES)
}


def table_spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; storage/schemas.py defines {sorted(TABLES)}") from None
