"""Turn a storage URI into what `lancedb.connect` needs.

Two kinds of URI: a local folder (relative or absolute; created if missing) and
`s3://bucket/prefix` for a store shared between machines. S3 settings come from the standard AWS
environment variables so no secret ever sits in a config file or a Prefect parameter:

    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN   credentials
    AWS_REGION or AWS_DEFAULT_REGION                              region
    AWS_ENDPOINT_URL or AWS_ENDPOINT                              S3-compatible server (SeaweedFS, MinIO...)

An `http://` endpoint turns on `allow_http`. Explicit `storage_options` win over the environment.
Lance's own S3 options (e.g. `client_max_retries`, `connect_timeout`) pass through `storage_options`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Lance storage option <- environment variables, first one set wins.
_S3_ENV = {
    "aws_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_session_token": ("AWS_SESSION_TOKEN",),
    "aws_region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "aws_endpoint": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
}
_SECRET_OPTIONS = frozenset({"aws_secret_access_key", "aws_session_token"})
_CREDENTIAL_CODES = frozenset({"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "ExpiredToken",
                               "InvalidToken", "TokenRefreshRequired"})
# scheme://user[:secret]@host...: refused here, and by the Prefect API for the flow's `storage` parameter (its
# schema's pattern), so such a URI never reaches a flow run's stored parameters
CREDENTIALS_IN_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(?:[^/@]*:[^@]*|[^/@]*)@")  # a secret may hold "/"
NO_CREDENTIALS_PATTERN = "^(?!" + CREDENTIALS_IN_URI.pattern.removeprefix("^") + ")"  # for a JSON schema
_UNREACHABLE_MARKERS = ("ConnectionRefused", "tcp connect error", "dns error", "TimedOut", "timed out")


class StorageUnavailable(ValueError):
    """The storage URI and its settings do not lead to a usable store (unreachable, no bucket, refused)."""


@dataclass(frozen=True)
class Location:
    uri: str  # absolute path for local stores, the s3:// URI otherwise
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    def describe(self) -> str:
        """The URI and its non-secret options, safe to log."""
        shown = {k: ("***" if k in _SECRET_OPTIONS else v) for k, v in sorted(self.storage_options.items())}
        if "aws_access_key_id" in shown:
            shown["aws_access_key_id"] = shown["aws_access_key_id"][:4] + "***"
        return f"{self.uri} {shown}" if shown else self.uri

    def unavailable(self, err: BaseException) -> StorageUnavailable:
        """A short, secret-free account of why opening this S3 store failed, naming what to set."""
        text = self._without_secrets(str(err))
        code = re.search(r"<Code>(\w+)</Code>", text)
        bucket = self.uri[len("s3://") :].split("/", 1)[0]
        endpoint = self.storage_options.get("aws_endpoint", "the AWS default for the region")
        if code and code.group(1) == "NoSuchBucket":
            reason = f"bucket {bucket!r} does not exist at {endpoint}; create it, or fix the URI or AWS_ENDPOINT_URL"
        elif code and code.group(1) in _CREDENTIAL_CODES:
            reason = (f"the server refused the credentials ({code.group(1)}); "
                      "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)")
        elif any(marker in text for marker in _UNREACHABLE_MARKERS):
            reason = f"cannot reach {endpoint}; set AWS_ENDPOINT_URL to the S3 server (and AWS_REGION)"
        else:
            reason = f"{code.group(1) if code else text[:300]}; check AWS_ENDPOINT_URL, AWS_REGION and the credentials"
        return StorageUnavailable(f"cannot open storage {self.describe()}: {reason}")

    def _without_secrets(self, text: str) -> str:
        for name, value in self.storage_options.items():
            if value and (name in _SECRET_OPTIONS or name == "aws_access_key_id"):
                text = text.replace(value, "***")
        return text


def resolve(
    uri: str, storage_options: Mapping[str, str] | None, environ: Mapping[str, str]
) -> Location:
    """The connect arguments for `uri`; creates a local folder that does not exist yet."""
    explicit = {k: str(v) for k, v in (storage_options or {}).items()}
    if CREDENTIALS_IN_URI.match(uri):
        shown = CREDENTIALS_IN_URI.sub(lambda m: f"{m.group(1)}***@", uri, count=1)
        raise ValueError(f"storage URI {shown} carries credentials: remove them from the URI and set "
                         "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL) in the environment, "
                         "where no log, Prefect parameter or table records them")
    if uri.startswith("s3://"):
        if len(uri) <= len("s3://") or uri[len("s3://")] == "/":
            raise ValueError(f"storage URI {uri!r} has no bucket; write it as s3://bucket/prefix")
        options = _s3_options_from_env(environ)
        options.update(explicit)
        endpoint = options.get("aws_endpoint", "")
        if endpoint.startswith("http://"):
            options.setdefault("allow_http", "true")
        return Location(uri=uri.rstrip("/"), storage_options=options)
    if "://" in uri:
        raise ValueError(f"storage URI {uri!r}: only local folders and s3://bucket/prefix are supported")
    path = Path(uri).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return Location(uri=str(path), storage_options=explicit)


def _s3_options_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for option, names in _S3_ENV.items():
        value = next((environ[n] for n in names if environ.get(n)), None)
        if value is not None:
            options[option] = value
    return options
