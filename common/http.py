"""A small JSON-over-HTTP(S) client for the calls between parties (gateway
to MDMS, MDMS to key holders): TLS verified against a configured trust
file, bounded answers, and one clear error instead of a traceback."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

from . import tls
from .files import ConfigError

MAX_ANSWER = 64 << 20


class HttpError(Exception):
    """The peer answered with an error status; `body` is its JSON (or {})."""

    def __init__(self, status: int, body: dict, url: str):
        super().__init__(f"{url} answered {status}: {body.get('error') or body.get('message') or ''}")
        self.status = status
        self.body = body


class JsonClient:
    def __init__(self, url: str, ca_file=None, headers: dict | None = None, timeout: float = 60):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"not an http(s) URL: {url!r}")
        if url.startswith("https://") and ca_file is None:
            raise ConfigError(f"{url}: an https URL needs a trust file (CA or pinned certificate)")
        self.url = url.rstrip("/")
        self.ctx = tls.client_context(ca_file) if url.startswith("https://") else None
        self.headers = dict(headers or {})
        self.timeout = timeout

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> dict | list:
        h = {**self.headers, **(headers or {})}
        if body is not None:
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as r:
                return json.loads(r.read(MAX_ANSWER) or b"null")
        except urllib.error.HTTPError as e:
            try:
                d = json.loads(e.read(1 << 16) or b"{}")
            except ValueError:
                d = {}
            raise HttpError(e.code, d if isinstance(d, dict) else {}, self.url) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise ConfigError(f"{self.url}: the server's TLS certificate is not the one this"
                                  f" client trusts ({e.reason.verify_message})") from None
            raise ConfigError(f"cannot reach {self.url}: {e.reason}") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.url}: {e}") from None

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, obj, headers: dict | None = None):
        return self.request("POST", path, json.dumps(obj).encode(), headers)
