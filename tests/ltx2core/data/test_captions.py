import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ltx2core.data.captions import CaptionTable, FromFilename, InstancePrompt, TextFile, read_jsonl
from storage.files import read_parquet_rows


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clips" / "a_dog-running.mp4"
    path.parent.mkdir()
    path.write_bytes(b"not decoded here")
    return path


def test_textfile_reads_the_same_stem_txt_and_joins_lines(video):
    video.with_suffix(".txt").write_text("a dog\n  running on sand \n\n", encoding="utf-8")
    assert TextFile().read(str(video)).caption == "a dog running on sand"


def test_textfile_strips_a_byte_order_mark(video):
    video.with_suffix(".txt").write_bytes("\ufeffcafé at dawn".encode())
    assert TextFile().read(str(video)).caption == "café at dawn"


def test_textfile_missing_empty_and_non_utf8_are_reasons_naming_the_file(video):
    txt = video.with_suffix(".txt")
    missing = TextFile().read(str(video))
    assert missing.caption is None and str(txt) in missing.reason and "missing" in missing.reason
    txt.write_text("  \n")
    assert TextFile().read(str(video)).reason == f"empty caption in caption file {txt}"
    txt.write_bytes("caf\xe9".encode("latin-1"))
    bad = TextFile().read(str(video))
    assert bad.caption is None and str(txt) in bad.reason and "not UTF-8" in bad.reason and "0xe9" in bad.reason


def test_textfile_source_fingerprint_changes_when_the_file_is_touched(video):
    txt = video.with_suffix(".txt")
    txt.write_text("one")
    before = TextFile().source(str(video)).fp
    assert TextFile().source(str(video)).fp == before
    st = txt.stat()
    os.utime(txt, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert TextFile().source(str(video)).fp != before


def test_filename_and_instance_prompt(video):
    assert FromFilename().read(str(video)).caption == "a dog running"
    assert InstancePrompt("sks dog").read(str(video)).caption == "sks dog"
    assert InstancePrompt("a").source(str(video)).fp != InstancePrompt("b").source(str(video)).fp


def test_jsonl_table_matches_by_file_name_with_or_without_extension(tmp_path, video):
    table = tmp_path / "captions.jsonl"
    table.write_text("\n".join(json.dumps(r) for r in [{"filename": "a_dog-running", "caption": "from stem"},
                                                        {"filename": "other.mp4", "caption": "x"}]))
    captions = CaptionTable(str(table), "filename", "caption", read_jsonl)
    assert captions.read(str(video)).caption == "from stem"
    missing = captions.read(str(video.with_name("nope.mp4")))
    assert missing.caption is None and "no row for nope.mp4" in missing.reason and str(table) in missing.reason


def test_parquet_table_with_custom_columns(tmp_path, video):
    table = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"file": ["clips/a_dog-running.mp4"], "text": ["from parquet"]}), table)
    captions = CaptionTable(str(table), "file", "text", read_parquet_rows)
    assert captions.read(str(video)).caption == "from parquet"


def test_parquet_table_with_a_wrong_column_name_says_which_columns_exist(tmp_path, video):
    table = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"file": ["a.mp4"], "text": ["x"]}), table)
    with pytest.raises(ValueError, match=r"no column caption \(columns are file, text\)"):
        CaptionTable(str(table), "file", "caption", read_parquet_rows).read(str(video))
