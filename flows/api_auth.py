"""Who may use the Prefect API: HTTP basic auth on `ltx2 server` beyond loopback, and the client-side check.

Prefect's self-hosted server refuses every API request without `Authorization: Basic base64(<auth string>)`
once PREFECT_SERVER_API_AUTH_STRING is set (health checks stay open); clients send PREFECT_API_AUTH_STRING,
and the UI asks for the same string on its login page. On loopback only local users reach the port, so the
server runs without one unless it is set. Anywhere else it must have one: the variable, or a string made once
and kept in PREFECT_HOME (mode 600), so workers and CI keep working across restarts.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flows.network import is_loopback
from flows.new_file import write_new

SERVER_VARIABLE = "PREFECT_SERVER_API_AUTH_STRING"
CLIENT_VARIABLE = "PREFECT_API_AUTH_STRING"
AUTH_FILE = "ltx2-api-auth"  # in PREFECT_HOME
USER = "ltx2"  # the UI's login form reads user:password; the server compares the whole string


class ApiAccessError(ValueError):
    """No usable auth string; the message says what to set."""


@dataclass(frozen=True)
class ServerAuth:
    secret: str
    file: Path | None  # where it is kept; None when it came from the server's environment

    def how_clients_set_it(self) -> str:
        """What `ltx2 server` prints: where clients find the string, never the string itself."""
        if self.file is None:
            return (f"API auth on ({SERVER_VARIABLE}): clients set {CLIENT_VARIABLE} to the same string; the UI's "
                    "login asks for it")
        return (f"API auth on: clients set {CLIENT_VARIABLE} to the string in {self.file} (e.g. export "
                f"{CLIENT_VARIABLE}=\"$(cat {self.file})\"); the UI's login asks for the same string")


def server_auth(host: str, home: Path, environ: Mapping[str, str] = os.environ) -> ServerAuth | None:
    """The auth string `ltx2 server` on `host` runs with: the variable when set, else none on loopback, else the
    one stored in `home` (made now if there is none)."""
    if SERVER_VARIABLE in environ:
        if not environ[SERVER_VARIABLE].strip():
            raise ApiAccessError(f"{SERVER_VARIABLE} is set but empty: unset it (a string is then made and kept in "
                            f"{home / AUTH_FILE}) or set it to a long random string")
        return ServerAuth(environ[SERVER_VARIABLE], None)
    if is_loopback(host):
        return None
    path = home / AUTH_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_new(path, f"{USER}:{secrets.token_urlsafe(24)}\n".encode())
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ApiAccessError(f"{path} is readable by other users (mode {mode:o}): chmod 600 {path}")
    secret = path.read_text().strip()
    if not secret:
        raise ApiAccessError(f"{path} is empty: delete it and a new string is made at the next start")
    return ServerAuth(secret, path)


def check_client(api_url: str, timeout_s: float = 10) -> None:
    """Fail with one sentence when the API at `api_url` cannot be reached or refuses this client's auth string."""
    import base64

    import httpx
    from prefect.settings import get_current_settings

    secret = get_current_settings().api.auth_string
    headers = {"Authorization": "Basic " + base64.b64encode(secret.get_secret_value().encode()).decode()} if secret \
        else {}
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/admin/version", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise ApiAccessError(f"cannot reach the Prefect API at {api_url} ({type(error).__name__}): start it "
                        "(`ltx2 server`) or fix PREFECT_API_URL") from None
    if response.status_code == 401:
        what = "refused this client's" if secret else "needs an"
        raise ApiAccessError(f"the Prefect API at {api_url} {what} auth string (401): set {CLIENT_VARIABLE} to the "
                        f"server's string (`ltx2 server` printed where it is kept)")

