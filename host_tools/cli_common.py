"""Small helpers shared by the `gridveil` subcommand modules."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

DEFAULT_HOME = Path(os.environ.get("GRIDVEIL_HOME", "var/gridveil"))


def home(args) -> Path:
    return Path(args.home)


def sub(subparsers, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose --help opens with the same one-line summary."""
    return subparsers.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")


def passphrase_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-file", help="file holding this holder's passphrase (default:"
                                             " the GRIDVEIL_HOLDER_PASSPHRASE variable)")


def read_secret_file(path: str | None, env: str, what: str) -> str | None:
    from common.files import ConfigError

    if path:
        try:
            return Path(path).read_text().rstrip("\n")
        except OSError as e:
            raise ConfigError(f"cannot read the {what} file: {e}") from None
    return os.environ.get(env)


def tls_args(p: argparse.ArgumentParser, init: bool = False) -> None:
    if init:
        p.add_argument("--tls-host", action="append", default=[],
                       help="make a TLS key and self-signed certificate for this host name or"
                            " address (repeatable); clients pin the certificate")
        p.add_argument("--export-cert", help="also copy that certificate here, for the clients")
    else:
        p.add_argument("--tls-cert", help="serve HTTPS with this certificate (default: the"
                                          " home's tls/cert.pem if there is one)")
        p.add_argument("--tls-key", help="and this key (default: the home's tls/key.pem)")


def tls_files(args, party_home: Path, name: str = "gridveil") -> tuple[str | None, str | None]:
    """At init: make the certificate when --tls-host was given. At serve:
    the certificate and key to serve with (explicit, else the home's)."""
    from common import tls

    cert, key = party_home / "tls" / "cert.pem", party_home / "tls" / "key.pem"
    if getattr(args, "tls_host", None):
        tls.self_signed(key, cert, name, args.tls_host)
        if args.export_cert:
            Path(args.export_cert).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cert, args.export_cert)
        return str(cert), str(key)
    if getattr(args, "tls_cert", None) or getattr(args, "tls_key", None):
        return args.tls_cert, args.tls_key
    if cert.exists() and key.exists():
        return str(cert), str(key)
    return None, None


def backup_commands(s, party: str, running: str, after_restore: str, backup, restore) -> None:
    """`<party> backup --out F` and `<party> restore ARCHIVE [--replace]`."""
    x = sub(s, "backup", f"write a consistent backup of this {party}'s home, while it {running}")
    x.add_argument("--out", required=True, help="the archive to write (.tar.gz)")
    x.set_defaults(func=backup)
    x = sub(s, "restore", f"restore a backup into this home (the {party} stopped);"
                          f" {after_restore}")
    x.add_argument("archive", help=f"a file written by `gridveil {party} backup`")
    x.add_argument("--replace", action="store_true",
                   help="move the home's current contents aside first")
    x.set_defaults(func=restore)
