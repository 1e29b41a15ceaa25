"""Small helpers shared by the `gridveil` subcommand modules."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_HOME = Path(os.environ.get("GRIDVEIL_HOME", "var/gridveil"))


def home(args) -> Path:
    return Path(args.home)


def sub(subparsers, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose --help opens with the same one-line summary."""
    return subparsers.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")


def passphrase_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-file", help="file holding the key passphrase (default: the"
                                             " GRIDVEIL_AUTHORITY_PASSPHRASE variable)")


def read_secret_file(path: str | None, env: str, what: str) -> str | None:
    from common.files import ConfigError

    if path:
        try:
            return Path(path).read_text().rstrip("\n")
        except OSError as e:
            raise ConfigError(f"cannot read the {what} file: {e}") from None
    return os.environ.get(env)
