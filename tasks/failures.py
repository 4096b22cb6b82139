"""A failed stage, said the way a user can act on it: the stage, the cause in a sentence, the fix.

Infrastructure fails in a few ways that users meet again and again (a full disk, a store that cannot be
reached or refuses the credentials, a folder they may not write, a resume with changed settings, the GPU
out of memory, a model file that does not fit the flavour); each gets its own sentence and fix. Anything else is
named by its type and message. The traceback is never the message: it goes to a log file (`write_traceback`) and
the Prefect log.
"""

from __future__ import annotations

import errno
import re
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ltx2core.models.checkpoint_keys import CheckpointFileError
from ltx2core.training.checkpoint import CheckpointMismatch
from ltx2core.training.output_lock import OutputBusy
from storage.lease import LeaseHeld

RERUN = "then run the same command again: finished stages and stored rows are kept and not recomputed"
# Words in the messages of LanceDB's object-store errors (Rust's reqwest and object_store) and of S3.
_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden", "ExpiredToken")
_UNREACHABLE = ("Connection refused", "dns error", "error trying to connect", "operation timed out",
                "Name or service not known", "Network is unreachable")


@dataclass(frozen=True)
class Failure:
    stage: str | None  # None when it failed before any stage ran
    scope: str | None  # the dataset, "*" or the run
    cause: str
    fix: str

    def where(self) -> str:
        if self.stage is None:
            return "before any stage ran"
        return f"in stage {self.stage}" + (f" ({self.scope})" if self.scope not in (None, "*") else "")


def mark_stage(error: BaseException, stage: str, scope: str) -> None:
    """Remember on the exception which stage raised it (the innermost stage wins), for `explain`."""
    if not hasattr(error, "ltx2_stage"):
        error.ltx2_stage = (stage, scope)  # type: ignore[attr-defined]


def explain(error: BaseException, config: Any = None) -> Failure:
    """The cause and fix of `error`; `config` (TrainConfig) lets out-of-memory advice quote this run's numbers."""
    stage, scope = getattr(error, "ltx2_stage", (None, None))
    text = f"{type(error).__name__}: {error}"
    oserror = next((e for e in _chain(error) if isinstance(e, OSError) and e.errno), None)
    if isinstance(error, (LeaseHeld, OutputBusy)):  # the message names the other run and what to do
        cause, _, fix = str(error).partition(". ")
        return Failure(stage, scope, cause, fix)
    if _is_oom(error):
        return Failure(stage, scope, f"the GPU ran out of memory ({_first_line(error)})", _oom_fix(stage, config))
    if isinstance(error, CheckpointFileError):  # the message names the file and the setting
        return Failure(stage, scope, f"a model file does not fit: {error}",
                       "change the file or the setting the cause names (model_flavour, pretrained_model_name_or_path, "
                       f"pretrained_transformer_model_name_or_path, text_encoder_path), {RERUN}")
    if isinstance(error, CheckpointMismatch):
        return Failure(stage, scope, str(error).split("\nrestore")[0],
                       "put those settings back to resume, or start this run again from step 0 with "
                       "`ltx2 run --force train` (or give it another output_dir)")
    if (oserror and oserror.errno == errno.ENOSPC) or "No space left on device" in text:
        path = oserror.filename if oserror and oserror.filename else _lance_path(text)
        where = f" under {path}" if path else ""
        return Failure(stage, scope, f"the disk is full{where} (No space left on device)",
                       f"free space on that disk, or point --storage / output_dir at a bigger one, {RERUN}")
    if (oserror and oserror.errno in (errno.EACCES, errno.EPERM, errno.EROFS)) or any(
            words in text for words in ("Permission denied", "Read-only file system")):
        path = oserror.filename if oserror and oserror.filename else _lance_path(text)
        where = f" to {path}" if path else ""
        return Failure(stage, scope, f"this user may not write{where} ({_first_line(error)})",
                       f"make it writable for this user, or point --storage / output_dir elsewhere, {RERUN}")
    if any(word in text for word in _CREDENTIALS):
        return Failure(stage, scope, f"the store refused the credentials ({_first_line(error)})",
                       f"check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) for this store, "
                       f"{RERUN}")
    if any(word in text for word in _UNREACHABLE):
        return Failure(stage, scope, f"the store could not be reached ({_first_line(error)})",
                       f"check AWS_ENDPOINT_URL and the network to it (AWS_ALLOW_HTTP=true for http://), {RERUN}")
    return Failure(stage, scope, _first_line(error),
                   f"the traceback below says where; fix the cause, {RERUN}")


def write_traceback(error: BaseException, folders: list[Path]) -> Path | None:
    """The full traceback in `ltx2-failure-<time>.log` in the first of `folders` that takes it (a full disk
    may refuse some); None if none did."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    text = "".join(traceback.format_exception(error))
    for folder in folders:
        path = Path(folder) / f"ltx2-failure-{stamp}.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def _lance_path(text: str) -> str | None:
    """The file a Lance IO error names (`... at path "/store/t.lance/data/x"`), cut to the .lance table."""
    found = re.search(r'at path "([^"]+)"', text)
    if not found:
        return None
    path = found.group(1)
    return path[:path.index(".lance") + len(".lance")] if ".lance" in path else path


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _is_oom(error: BaseException) -> bool:
    return any(type(e).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(e) for e in _chain(error))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _oom_fix(stage: str | None, config: Any) -> str:
    """What to lower and which memory option to turn on, for the stage that ran out (the quickstart's advice)."""
    if stage == "text-embeds":
        return "the batch is halved and retried on its own; if a single caption does not fit, free the GPU " \
               "(other processes) or cache text embeddings on a bigger card"
    if stage == "latents":
        on = [k for k in ("vae_enable_temporal_roll", "vae_enable_patch_conv", "vae_enable_tiling")
              if config is not None and getattr(config, k, False)]
        return ("turn on vae_enable_temporal_roll (exact; 3.3 GiB at 121 frames), then vae_enable_patch_conv, then "
                f"vae_enable_tiling (now on: {', '.join(on) or 'none'}), or lower resolution / num_frames; {RERUN}")
    if stage == "validate":
        return f"set enable_group_offload: true (the transformer streams from the host), or a smaller " \
               f"validation_resolution / validation_num_video_frames; {RERUN}"
    settings = ""
    if config is not None:
        settings = (f" (now: batch {config.train_batch_size}, base_model_precision {config.base_model_precision}, "
                    f"musubi_blocks_to_swap {config.musubi_blocks_to_swap or 0}, gradient_checkpointing "
                    f"{config.gradient_checkpointing})")
    return ("lower the datasets' resolution or num_frames (e.g. --resolution 512 --num-frames 49), or turn on "
            "musubi_blocks_to_swap: 16 (-7 GiB at 768x512x121, no slower on an H100), base_model_precision: "
            f"fp8-e4m3fn with compile_blocks (17.4 GiB), gradient_checkpointing{settings}; {RERUN}")
