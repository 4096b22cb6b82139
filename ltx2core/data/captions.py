"""Caption strategies: where a sample's caption comes from, and a fingerprint of that source.

The fingerprint is cheap to compute (a stat, not a read), so the captions stage re-reads only the
captions whose source changed: touching one .txt re-ingests one caption.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ltx2core.data.fingerprint import fingerprint

CAPTIONS_VERSION = 1


@dataclass(frozen=True)
class CaptionSource:
    source: str  # where the caption comes from, for people
    fp: str  # changes when the caption may have changed


@dataclass(frozen=True)
class Caption:
    caption: str | None
    reason: str | None  # why there is no caption


def _stat_fp(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _read_text(path: Path) -> Caption:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Caption(None, f"missing caption file {path}: write the caption there")
    except OSError as e:
        return Caption(None, f"cannot read caption file {path}: {e.strerror}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return Caption(None, f"caption file {path} is not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}): "
                             "re-save it as UTF-8")
    return _clean(text, f"caption file {path}")


def _clean(text: str, where: str) -> Caption:
    # Several lines are one caption: SimpleTuner users split long captions over lines.
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return Caption(text, None) if text else Caption(None, f"empty caption in {where}")


class TextFile:
    """`textfile`: the .txt beside the video, same stem."""

    def source(self, video_path: str) -> CaptionSource:
        txt = Path(video_path).with_suffix(".txt")
        return CaptionSource(str(txt), fingerprint(CAPTIONS_VERSION, "textfile", _stat_fp(txt)))

    def read(self, video_path: str) -> Caption:
        return _read_text(Path(video_path).with_suffix(".txt"))


class FromFilename:
    """`filename`: the file name, with _ and - as spaces."""

    def source(self, video_path: str) -> CaptionSource:
        return CaptionSource("filename", fingerprint(CAPTIONS_VERSION, "filename", Path(video_path).stem))

    def read(self, video_path: str) -> Caption:
        return _clean(re.sub(r"[_\-]+", " ", Path(video_path).stem), f"file name {video_path}")


class InstancePrompt:
    """`instanceprompt`: one prompt for every sample."""

    def __init__(self, prompt: str):
        self.prompt = prompt

    def source(self, video_path: str) -> CaptionSource:
        return CaptionSource("instance_prompt", fingerprint(CAPTIONS_VERSION, "instanceprompt", self.prompt))

    def read(self, video_path: str) -> Caption:
        return _clean(self.prompt, "instance_prompt")


class CaptionTable:
    """`parquet` / `jsonl`: a file mapping file names to captions, read once per stage run."""

    def __init__(self, path: str, filename_column: str, caption_column: str,
                 read_rows: Callable[[str, list[str]], list[dict]]):
        self.path = path
        self.file_fp = _stat_fp(Path(path))
        self.columns = (filename_column, caption_column)
        self._read_rows = read_rows
        self._by_name: dict[str, str | None] | None = None

    def source(self, video_path: str) -> CaptionSource:
        return CaptionSource(self.path, fingerprint(CAPTIONS_VERSION, "table", self.file_fp, self.columns,
                                                    Path(video_path).name))

    def _mapping(self) -> dict[str, str | None]:
        if self._by_name is None:
            name_col, caption_col = self.columns
            self._by_name = {}
            for row in self._read_rows(self.path, [name_col, caption_col]):
                name = str(row[name_col])
                # Match on the full relative name and on the bare file name, with and without extension.
                for key in {name, os.path.basename(name), os.path.splitext(os.path.basename(name))[0]}:
                    self._by_name.setdefault(key, row[caption_col])
        return self._by_name

    def read(self, video_path: str) -> Caption:
        mapping = self._mapping()
        p = Path(video_path)
        for key in (str(p), p.name, p.stem):
            if key in mapping:
                value = mapping[key]
                return _clean(value or "", f"{self.path} row for {p.name}")
        return Caption(None, f"no row for {p.name} in {self.path} ({self.columns[0]} column): add one")


def read_jsonl(path: str, columns: list[str]) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not valid JSON: {e.msg}") from None
            if all(c in row for c in columns):
                rows.append(row)
    return rows
