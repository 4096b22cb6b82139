"""Read SimpleTuner's `config.json` and `multidatabackend.json` into the typed models.

This is the tolerant edge: it strips SimpleTuner's `--` key prefixes, drops keys this project does not
use (naming them all in one warning), skips dataset types it cannot train on yet, and then hands the rest
to the strict models. Every user mistake comes back as one `ConfigError` listing all problems, each line
naming the file, the key and the fix; never a traceback.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, NamedTuple, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from ltx2core.config.databackend import (
    SKIPPED_DATASET_TYPES,
    SUPPORTED_DATASET_TYPES,
    ConditioningDataset,
    Dataset,
    TextEmbedsDataset,
    VideoDataset,
    check_dataset_set,
    with_references,
)
from ltx2core.config.fields import RULE_ERROR
from ltx2core.config.overrides import Overrides
from ltx2core.config.train import TrainConfig

DATASET_MODELS: dict[str, type[VideoDataset | TextEmbedsDataset | ConditioningDataset]] = {
    "video": VideoDataset,
    "text_embeds": TextEmbedsDataset,
    "conditioning": ConditioningDataset,
}


class ConfigError(Exception):
    """Every problem found in the config files, one line each: `file: [dataset 'id':] key value: fix`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{count} in the config:\n" + "\n".join(f"  - {p}" for p in problems))


class LoadedConfig(NamedTuple):
    config: TrainConfig
    warnings: list[str]


class LoadedDatasets(NamedTuple):
    datasets: list[Dataset]
    warnings: list[str]


class LoadedProject(NamedTuple):
    config: TrainConfig
    datasets: list[Dataset]
    warnings: list[str]


def load_train_config(path: str | Path, overrides: Overrides | None = None) -> LoadedConfig:
    """`config.json` (with `overrides` set on top) -> TrainConfig. Raises ConfigError naming every problem."""
    data = _read_json_object(path)
    if overrides is not None:
        data = overrides.apply_to_config(data)
    data, unknown = _split_unknown(data, TrainConfig)
    warnings = [_unknown_warning(path, unknown, TrainConfig)] if unknown else []
    if _streamed_offload_with_checkpointing(data):
        # SimpleTuner does the same (with a warning): the combination silently trains nothing (measured).
        data["group_offload_use_stream"] = False
        warnings.append(
            f"{path}: group_offload_use_stream turned off: with gradient_checkpointing on, diffusers' streamed "
            "group offload restores stale weights and every LoRA update is lost (SimpleTuner turns it off too)"
        )
    if data.get("optimizer") == "adamw_bf16":
        # SimpleTuner's default: AdamW with bf16 state. Here LoRA weights and their state stay float32 (bf16
        # Adam updates vanish), which is torch AdamW.
        data["optimizer"] = "adamw"
        warnings.append(f"{path}: optimizer adamw_bf16 trains as adamw here (float32 LoRA weights and state)")
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError([f"{path}: {line}" for line in _describe(error)]) from None
    if config.scheduled_sampling_max_step_offset and config.scheduled_sampling_reflexflow is None:
        warnings.append(f"{path}: scheduled sampling rolls out with plain Euler steps and the plain velocity target; "
                        "SimpleTuner also adds ReflexFlow's loss terms for flow-matching models by default, which "
                        "are not implemented here (set scheduled_sampling_reflexflow false to silence this)")
    return LoadedConfig(config, warnings)


def load_databackend(
    path: str | Path, *, check_paths: bool = True, overrides: Overrides | None = None
) -> LoadedDatasets:
    """`multidatabackend.json` -> video and text-embeds datasets. Raises ConfigError naming every problem.

    `check_paths=False` skips the existence checks (dataset folders, caption tables) for a machine that
    only trains from the stored latents; paths are still made absolute.
    """
    blocks = _read_json(path)
    if not isinstance(blocks, list):
        raise ConfigError([f"{path}: expected a JSON list of dataset blocks, got {_json_kind(blocks)}"])
    datasets: list[Dataset] = []
    warnings: list[str] = []
    problems: list[str] = []
    unknown: list[str] = []
    for position, block in enumerate(blocks, start=1):
        if not isinstance(block, dict):
            problems.append(f"{path}: dataset #{position}: expected a JSON object, got {_json_kind(block)}")
            continue
        block = _strip_dashes(block, problems, f"{path}: dataset #{position}: ")
        name = f"dataset {block['id']!r}" if isinstance(block.get("id"), str) else f"dataset #{position}"
        kind = block.get("dataset_type")
        if kind is None or kind in SKIPPED_DATASET_TYPES:
            why = f"{kind} datasets" if kind else "no dataset_type, which SimpleTuner reads as image: image datasets"
            warnings.append(f"{path}: {name}: {why} are not supported yet; skipped")
            continue
        if kind not in SUPPORTED_DATASET_TYPES:
            problems.append(
                f"{path}: {name}: dataset_type {kind!r} is not one of {', '.join(SUPPORTED_DATASET_TYPES)} "
                f"({', '.join(SKIPPED_DATASET_TYPES)} are skipped)"
            )
            continue
        if kind == "video" and (clashes := _move_into_video_block(block)):
            problems += [f"{path}: {name}: {clash}" for clash in clashes]
            continue
        if kind == "video" and overrides is not None:
            block = overrides.apply_to_video_dataset(block)
        model = DATASET_MODELS[kind]
        known, dropped = _split_unknown(block, model)
        unknown += [f"{name}: {key}" for key in dropped]
        try:
            dataset = model.model_validate(known, context={"check_paths": check_paths})
        except ValidationError as error:
            problems += [f"{path}: {name}: {line}" for line in _describe(error)]
            continue
        if dataset.type == "aws":
            warnings.append(f"{path}: {name}: type 'aws' is kept but not read yet: probing reads local folders only")
        datasets.append(dataset)
    if not problems:  # rules across datasets only make sense once every block is valid
        for who, what in check_dataset_set(datasets):
            problems.append(f"{path}: dataset {who!r}: {what}" if who else f"{path}: {what}")
    if problems:
        raise ConfigError(problems)
    datasets = with_references(datasets)
    if unknown:
        warnings.insert(0, _unknown_warning(path, unknown, VideoDataset))
    return LoadedDatasets(datasets, warnings)


def load_project(
    config_path: str | Path,
    databackend_path: str | Path | None = None,
    *,
    check_paths: bool = True,
    overrides: Overrides | None = None,
) -> LoadedProject:
    """Both files, with the problems of both reported together. The datasets file defaults to the config's
    `data_backend_config`. A bad override is reported against the file it lands in, marked as an override."""
    problems: list[str] = []
    config = datasets = None
    warnings: list[str] = []
    try:
        config, config_warnings = load_train_config(config_path, overrides)
        warnings += config_warnings
    except ConfigError as error:
        problems += error.problems
    named = databackend_of(config_path)
    if databackend_path is None:
        databackend_path = named
    elif named is not None and _names_databackend(config_path) and Path(named).absolute() != Path(
            databackend_path).absolute():
        warnings.append(f"using the datasets file {databackend_path} given for this run; {config_path}'s "
                        f"data_backend_config {named} is not read")
    if databackend_path is not None:
        try:
            datasets, dataset_warnings = load_databackend(databackend_path, check_paths=check_paths,
                                                          overrides=overrides)
            warnings += dataset_warnings
        except ConfigError as error:
            problems += error.problems
    if config is not None and datasets is not None and config.audio_video_mode != "joint" and not any(
            isinstance(d, VideoDataset) and not d.disabled and d.video.audio for d in datasets):
        problems.append(f"{config_path}: audio_video_mode {config.audio_video_mode} trains one modality conditioned on "
                        f"the other, but no enabled video dataset in {databackend_path} has an audio block: add one "
                        "(\"video\": {\"audio\": {}}) or set audio_video_mode joint")
    audio_only = [d.id for d in datasets or [] if isinstance(d, VideoDataset) and not d.disabled and d.video.audio
                  and d.video.audio.audio_only]
    if config is not None and audio_only and config.audio_video_mode != "audio_only":
        problems.append(f"{databackend_path}: {', '.join(audio_only)} {'is' if len(audio_only) == 1 else 'are'} "
                        f"audio-only (audio.audio_only), which trains with audio_video_mode audio_only: set that in "
                        f"{config_path}, or remove audio_only (a run trains one kind of LoRA)")
    ic_lora = [d.id for d in datasets or [] if isinstance(d, VideoDataset) and not d.disabled and d.conditioning_data]
    if config is not None and ic_lora and config.scheduled_sampling_max_step_offset:
        problems.append(f"{config_path}: scheduled sampling with the IC-LoRA dataset(s) {', '.join(ic_lora)} of "
                        f"{databackend_path} is not supported (the rollout does not carry reference tokens): set "
                        "scheduled_sampling_max_step_offset 0, or remove conditioning_data")
    if config is not None and datasets is not None and config.eval_dataset_id is not None:
        videos = [d.id for d in datasets if isinstance(d, VideoDataset) and not d.disabled]
        if config.eval_dataset_id not in videos:
            problems.append(
                f"{config_path}: eval_dataset_id {config.eval_dataset_id!r} is not an enabled video dataset in "
                f"{databackend_path}: use one of {videos}"
            )
    if problems:
        raise ConfigError(_mark_overridden(problems, overrides))
    return LoadedProject(config, datasets, warnings)


def _mark_overridden(problems: list[str], overrides: Overrides | None) -> list[str]:
    """A problem with an overridden key is the override's, not the file's: say so, or the user edits the file."""
    given = overrides.model_dump(exclude_none=True) if overrides is not None else {}
    return [p + " (this value is the run's override, not the file's: change the override)"
            if any(f"{key} {value}" in p for key, value in given.items()) else p for p in problems]


# ---- reading


def _names_databackend(config_path: str | Path) -> bool:
    try:
        return "data_backend_config" in _read_json_object(config_path)
    except ConfigError:
        return False


def databackend_of(config_path: str | Path) -> Path | None:
    """The datasets file the config names in `data_backend_config` (None if the config is unreadable).

    A relative path is looked up beside the config file first, then in the working folder (where SimpleTuner,
    run from its own folder, finds it); where neither exists, beside the config, so the error names that.
    Without the key: config/multidatabackend.json in the working folder, as before.
    """
    try:
        data = _read_json_object(config_path)
    except ConfigError:
        return None
    value = data.get("data_backend_config")
    if value is None:
        return Path(TrainConfig.model_fields["data_backend_config"].default)
    if not isinstance(value, (str, Path)):
        return None  # the config's own validation reports it
    path = Path(value).expanduser()
    beside = Path(config_path).parent / path  # `path` itself when it is absolute
    return (beside if beside.is_file() or not path.is_file() else path).absolute()


def _read_json(path: str | Path) -> Any:
    file = Path(path)
    if not file.is_file():
        where = f" (looked for {file.absolute()})" if not file.is_absolute() else ""
        raise ConfigError([f"{path}: no such file{where}"])
    duplicates: list[str] = []

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        duplicates.extend(sorted({key for key in keys if keys.count(key) > 1}))
        return dict(pairs)

    try:
        data = json.loads(file.read_text(encoding="utf-8"), object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as error:
        raise ConfigError([f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"]) from None
    if duplicates:  # json keeps the last one silently; the user meant one of them
        raise ConfigError([f"{path}: key {key!r} appears twice in one object: keep one" for key in duplicates])
    return data


def _read_json_object(path: str | Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a JSON object of settings, got {_json_kind(data)}"])
    problems: list[str] = []
    data = _strip_dashes(data, problems, f"{path}: ")
    if problems:
        raise ConfigError(problems)
    return data


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), f"the value {value!r}")


# ---- SimpleTuner compatibility


def _strip_dashes(data: dict[str, Any], problems: list[str], where: str) -> dict[str, Any]:
    """SimpleTuner accepts its CLI spelling `--key` in JSON files."""
    clean: dict[str, Any] = {}
    for key, value in data.items():
        bare = key.removeprefix("--")
        if bare in clean:
            problems.append(f"{where}{bare!r} is given twice (as '{bare}' and '--{bare}'): keep one")
        clean[bare] = value
    return clean


def _move_into_video_block(block: dict[str, Any]) -> list[str]:
    """SimpleTuner reads `audio` and `bucket_strategy` at the dataset level; here they live in `video`."""
    clashes = []
    for key in ("bucket_strategy", "audio"):
        if key not in block or not isinstance(video := block.setdefault("video", {}), dict):
            continue  # absent, or a malformed video block that the model reports
        outer = block.pop(key)
        if video.setdefault(key, outer) != outer:
            clashes.append(f"{key} {_show(outer)} disagrees with video.{key} {_show(video[key])}: keep one")
    return clashes


def _streamed_offload_with_checkpointing(data: dict[str, Any]) -> bool:
    defaults = TrainConfig.model_fields
    wanted = ("enable_group_offload", "group_offload_use_stream", "gradient_checkpointing")
    return all(_as_bool(data.get(key, defaults[key].default)) for key in wanted)


def _as_bool(value: Any) -> bool:
    try:
        return TypeAdapter(bool).validate_python(value)
    except ValidationError:
        return False  # the model reports the bad value


def _split_unknown(data: dict[str, Any], model: type[BaseModel], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """The keys `model` (and its sub-models) accepts, and the dotted names of the ones it does not."""
    fields = {}
    for name, field in model.model_fields.items():
        fields[name] = field
        for alias in getattr(field.validation_alias, "choices", ()):
            if isinstance(alias, str):
                fields[alias] = field
    known: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in data.items():
        if key not in fields:
            unknown.append(prefix + key)
            continue
        sub = _submodel(fields[key].annotation)
        if sub is not None and isinstance(value, dict):
            value, dropped = _split_unknown(value, sub, f"{prefix}{key}.")
            unknown += dropped
        elif sub is not None and isinstance(value, list):
            items = []
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    item, dropped = _split_unknown(item, sub, f"{prefix}{key}[{index}].")
                    unknown += dropped
                items.append(item)
            value = items
        known[key] = value
    return known, unknown


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if found := _submodel(arg):
            return found
    return None


def _unknown_warning(path: str | Path, keys: list[str], model: type[BaseModel]) -> str:
    """One line naming every ignored key, with the near miss of a known key where there is one."""
    count = f"{len(keys)} key{'s' if len(keys) != 1 else ''}"
    return f"{path}: ignored {count} this trainer does not use: {', '.join(_with_guess(k, model) for k in keys)}"


def _with_guess(key: str, model: type[BaseModel]) -> str:
    """`lora_rnak` -> `lora_rnak (did you mean lora_rank?)`; `dataset 'x': reslution` looks in `model`."""
    *where, name = key.rsplit(": ", 1)
    parent, _, leaf = name.rpartition(".")
    fields = model.model_fields
    if parent:  # a key inside a sub-block (video.min_frame): guess among that block's keys
        sub = _submodel(fields[parent.split("[")[0]].annotation) if parent.split("[")[0] in fields else None
        fields = sub.model_fields if sub is not None else {}
    guess = difflib.get_close_matches(leaf, list(fields), n=1, cutoff=0.8)
    return f"{key} (did you mean {guess[0]}?)" if guess else key


# ---- error text


def _describe(error: ValidationError) -> list[str]:
    """Pydantic's errors as `key value: what to do` lines; rule errors already carry their fix."""
    lines: list[str] = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        if item["type"] == RULE_ERROR:
            for key, text in item["ctx"]["problems"]:
                parents = loc[:-1] if loc and loc[-1] == key else loc
                lines.append(".".join([*parents, key]) + text[len(key) :])
            continue
        key = ".".join(loc)
        if item["type"] == "missing":
            lines.append(f"{key} is required")
        else:
            lines.append(f"{key} {_show(item['input'])}: {item['msg']}")
    return lines


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
