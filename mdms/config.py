"""The MDMS's home directory and its settings file, mdms.json:

    {"db": "sqlite:////var/lib/gridveil/mdms/mdms.db",    (or postgresql://...)
     "holders": {"utility":  {"url": "https://holder-u:8711", "ca": "holder-utility.ca.pem",
                              "token_file": "holder-utility.token"},
                 "guardian": {...}},
     "release_every_s": 60,         (optional: `mdms serve` runs the release job)
     "retention_days": 400}         (optional: drop older readings, by whole months)

Relative file names are inside the home. The MDMS reaches the key holders
only over HTTPS (or HTTP on one host), with a bearer token it made itself;
each holder keeps only the token's SHA-256 (`gridveil holder allow`).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from authority.client import Authority, HolderClient, token_hash
from common.files import ConfigError, check_owner_only, read_json, write_atomic, write_json

DB_ENV = "GRIDVEIL_MDMS_DB"


class MdmsHome:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.settings_file = self.path / "mdms.json"

    def settings(self) -> dict:
        d = read_json(self.settings_file, "MDMS settings")
        if not isinstance(d, dict) or not isinstance(d.get("db"), str):
            raise ConfigError(f"{self.settings_file}: needs a \"db\" URL")
        return d

    def db_url(self) -> str:
        """$GRIDVEIL_MDMS_DB wins, so a PostgreSQL password need not be in a file."""
        return os.environ.get(DB_ENV) or self.settings()["db"]

    def retention_days(self) -> int | None:
        """Days of readings, day records and aggregate parts to keep (the
        released values and bills are kept); None keeps everything."""
        v = self.settings().get("retention_days")
        if v is not None and (type(v) is not int or v < 31):
            raise ConfigError(f"{self.settings_file}: retention_days must be a whole number of"
                              " days, at least 31 (or absent: keep everything)")
        return v

    def release_every_s(self) -> float:
        """How often `mdms serve` runs the release job (0: it does not;
        `gridveil mdms release` does it then)."""
        v = self.settings().get("release_every_s", 0)
        if not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{self.settings_file}: release_every_s must be a number of"
                              " seconds (0: off)")
        return float(v)

    def file(self, name: str) -> Path:
        return self.path / name


def init(home: Path, db_url: str | None) -> MdmsHome:
    h = MdmsHome(home)
    if h.settings_file.exists():
        raise ConfigError(f"an MDMS is already set up in {h.path}")
    h.path.mkdir(parents=True, exist_ok=True)
    h.path.chmod(0o700)
    url = db_url or f"sqlite:///{(h.path / 'mdms.db').resolve()}"
    userinfo = url.split("://", 1)[-1].split("@", 1)[0] if "@" in url else ""
    if ":" in userinfo:
        raise ConfigError("keep the database password out of mdms.json: give the URL without it"
                          f" and set ${DB_ENV} (or use a .pgpass file)")
    write_json(h.settings_file, {"db": url, "holders": {}})
    return h


def add_holder(home: Path, role: str, url: str, ca_file: str | None) -> str:
    """Configure one key holder; makes the MDMS's bearer token for it and
    returns the token's SHA-256, to hand to that holder."""
    if role not in ("single", "utility", "guardian"):
        raise ConfigError("role must be single, utility or guardian")
    h = MdmsHome(home)
    d = h.settings()
    entry = {"url": url, "token_file": f"holder-{role}.token"}
    if ca_file:
        entry["ca"] = f"holder-{role}.ca.pem"
        shutil.copyfile(ca_file, h.file(entry["ca"]))
    elif url.startswith("https://"):
        raise ConfigError("an https holder needs --ca (its certificate or its CA)")
    token = secrets.token_urlsafe(32)
    write_atomic(h.file(entry["token_file"]), (token + "\n").encode(), secret=True)
    d.setdefault("holders", {})[role] = entry
    write_json(h.settings_file, d)
    return token_hash(token)


def authority(home: Path) -> Authority:
    h = MdmsHome(home)
    holders = {}
    for role, e in h.settings().get("holders", {}).items():
        try:
            token_file = h.file(e["token_file"])
            check_owner_only(token_file, "holder API token")
            token = token_file.read_text().strip()
            holders[role] = HolderClient(role, e["url"], token,
                                         h.file(e["ca"]) if e.get("ca") else None)
        except (KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"{h.settings_file}: holder {role} is malformed: {err!r}") from None
        except OSError as err:
            raise ConfigError(f"cannot read the token for holder {role}: {err}") from None
    if not holders:
        raise ConfigError(f"no key holders configured in {h.settings_file}; add them with"
                          " `gridveil mdms holder-add`")
    return Authority(holders)

