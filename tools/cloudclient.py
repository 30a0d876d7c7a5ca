"""The one client of the cloud's JSON API (/api/v1) that the tools and the tests use.

    api = ApiClient("https://keydrop.example/api/v1", token=TOKEN)
    status, body = api.call("GET", "/locks/24a16054ab3c")        # any status; the caller decides
    lock = api.request("POST", "/locks", {...})                    # 2xx or CloudError with the cloud's message

A cloud that cannot be reached raises CloudUnreachable; a reply that is not JSON comes back as
{"message": <its first 200 characters>}, so no caller ever sees a decoding traceback.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from base64 import b64encode
from typing import Any


class CloudError(Exception):
    """The cloud answered, but not with what was asked for. `status` is the HTTP status."""

    def __init__(self, message: str, status: int | None = None, payload: Any = None):
        super().__init__(message)
        self.status = status
        self.payload = payload


class CloudUnreachable(CloudError):
    """No HTTP answer at all: wrong URL, no network, server down, timeout."""


def api_url(cloud_url: str) -> str:
    """The API root of a cloud given by its site URL (what installers type)."""
    return cloud_url.rstrip("/") + "/api/v1"


class ApiClient:
    """JSON over HTTP with the agency's bearer token, or a staff login (basic) to mint a token."""

    def __init__(self, base_url: str, token: str | None = None, basic: tuple[str, str] | None = None,
                 timeout: float = 30):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.basic = basic
        self.timeout = timeout

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.basic:
            pair = f"{self.basic[0]}:{self.basic[1]}".encode()
            headers["Authorization"] = "Basic " + b64encode(pair).decode()
        return headers

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body) for any status; CloudUnreachable when nothing answers."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers=self._headers(data is not None))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CloudUnreachable(f"Cannot reach the cloud at {self.base_url}: {reason}") from None
        try:
            return status, (json.loads(raw) if raw else {})
        except ValueError:
            return status, {"message": raw[:200].decode(errors="replace")}

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded body of a 2xx answer; any other status raises CloudError with the cloud's message."""
        status, payload = self.call(method, path, body)
        if 200 <= status < 300:
            return payload
        raise CloudError(f"{method} {path} answered HTTP {status}{describe(payload)}", status, payload)

    def new_token(self) -> str:
        """A fresh API token for the staff login this client was made with (POST /tokens)."""
        payload = self.request("POST", "/tokens", {})
        if not isinstance(payload, dict) or not payload.get("token"):
            raise CloudError("POST /tokens answered without a token", 200, payload)
        return str(payload["token"])


def describe(payload: Any) -> str:
    """': <the cloud's message>' when its reply carries one, else ''."""
    msg = payload.get("message") if isinstance(payload, dict) else None
    return f": {msg}" if msg else ""
