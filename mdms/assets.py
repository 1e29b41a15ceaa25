"""The dashboard's and the portal's static files, served from memory.

Each file has two names: its own (`chart.js`) and one carrying the first 12
hex digits of its SHA-256 (`chart.0123456789ab.js`). Pages link the hashed
name, which never changes meaning, so a browser keeps it a year without
asking again; a new release links new names. The plain name stays valid
for anyone who types it, revalidated on every use. Text files go out
gzip-compressed to browsers that accept it; pages themselves are never
compressed (a page carries a CSRF token, and compressing secrets next to
reflected input is how BREACH reads them)."""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import Response

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None when compression does not pay
    media_type: str
    etag: str


def _load(path: Path) -> tuple[str, Asset]:
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    gz = gzip.compress(body, 9, mtime=0)
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media.startswith("text/") or media.endswith(("javascript", "json", "svg+xml")):
        media += "; charset=utf-8"
    return digest[:12], Asset(body, gz if len(gz) < len(body) * 0.9 else None, media,
                              f'"{digest[:32]}"')


class Assets:
    """An ASGI app for /static, and `url(name)` for the templates."""

    def __init__(self, directory: Path):
        self.files: dict[str, tuple[Asset, str]] = {}
        self.hashed: dict[str, str] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file():
                short, asset = _load(path)
                hashed = f"{path.stem}.{short}{path.suffix}"
                self.files[path.name] = (asset, REVALIDATE)
                self.files[hashed] = (asset, IMMUTABLE)
                self.hashed[path.name] = hashed

    def url(self, name: str) -> str:
        return "/static/" + self.hashed[name]

    def plain_name(self, served: str) -> str | None:
        """`chart.js` for `chart.<hash>.js` (or for `chart.js`); None if unknown."""
        name = served.rsplit("/", 1)[-1]
        for plain, hashed in self.hashed.items():
            if name in (plain, hashed):
                return plain
        return None

    async def __call__(self, scope, receive, send):
        found = self.files.get(scope["path"].rsplit("/", 1)[-1]) \
            if scope["method"] in ("GET", "HEAD") else None
        if found is None:
            return await Response("no such file", 404, media_type="text/plain")(scope, receive,
                                                                                 send)
        asset, cache = found
        headers = Headers(scope=scope)
        common = {"Cache-Control": cache, "ETag": asset.etag, "Vary": "Accept-Encoding"}
        if headers.get("if-none-match") == asset.etag:
            return await Response(status_code=304, headers=common)(scope, receive, send)
        body = asset.body
        if asset.gzipped and "gzip" in headers.get("accept-encoding", ""):
            body, common["Content-Encoding"] = asset.gzipped, "gzip"
        if scope["method"] == "HEAD":
            common["Content-Length"] = str(len(body))
            body = b""
        await Response(body, headers=common, media_type=asset.media_type)(scope, receive, send)
