"""Storage URIs: local folders are created, s3:// takes its settings from the AWS environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.location import resolve

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ENV = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "eu-west-1",
       "AWS_ENDPOINT_URL": "http://127.0.0.1:8333"}


def test_local_folder_is_made_absolute_and_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    location = resolve("a/b", None, ENV)
    assert location.uri == str(tmp_path / "a" / "b") and (tmp_path / "a" / "b").is_dir()
    assert location.is_local and location.storage_options == {}  # AWS variables do not apply


def test_s3_settings_come_from_the_environment() -> None:
    location = resolve("s3://bucket/prefix/", None, ENV)
    assert location.uri == "s3://bucket/prefix" and not location.is_local
    assert location.storage_options == {
        "aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": SECRET, "aws_region": "eu-west-1",
        "aws_endpoint": "http://127.0.0.1:8333", "allow_http": "true"}


def test_first_variable_of_each_pair_and_explicit_options_win() -> None:
    env = ENV | {"AWS_REGION": "us-west-2", "AWS_ENDPOINT": "http://other:9000"}
    location = resolve("s3://bucket/db", {"aws_endpoint": "https://s3.example.com"}, env)
    assert location.storage_options["aws_region"] == "us-west-2"
    assert location.storage_options["aws_endpoint"] == "https://s3.example.com"
    assert "allow_http" not in location.storage_options


def test_description_hides_secrets() -> None:
    text = resolve("s3://bucket/db", {"aws_session_token": "TOKEN123"}, ENV).describe()
    assert "s3://bucket/db" in text and "http://127.0.0.1:8333" in text
    assert SECRET not in text and "TOKEN123" not in text and "AKIAEXAMPLE" not in text
    assert SECRET not in repr(resolve("s3://bucket/db", None, ENV))


@pytest.mark.parametrize(("uri", "message"), [("s3://", "no bucket"), ("gs://bucket/db", "only local folders")])
def test_unsupported_uris_are_refused(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(uri, None, {})


@pytest.mark.parametrize("uri", ["s3://AKIAEXAMPLE:abc/def+ghi@bucket/ltx2", "s3://AKIAEXAMPLE@bucket/ltx2",
                                 "s3://:abc/def@bucket"])
def test_credentials_in_the_uri_are_refused_without_repeating_them(uri: str) -> None:
    with pytest.raises(ValueError, match="carries credentials.*AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as err:
        resolve(uri, None, {})
    assert "AKIAEXAMPLE" not in str(err.value) and "def" not in str(err.value)
    assert str(err.value).startswith("storage URI s3://***@bucket")


def test_an_at_sign_in_the_path_is_no_credential(tmp_path: Path) -> None:
    assert resolve("s3://bucket/runs@2026/a:b", None, {}).uri == "s3://bucket/runs@2026/a:b"
    assert resolve(str(tmp_path / "me@host"), None, {}).uri == str(tmp_path / "me@host")
