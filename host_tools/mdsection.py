"""Sections of docs/benchmarks.md that other commands than `gridveil bench`
measure (`gridveil flood`, `gridveil pageweight`): each between markers of
its own name, replaced by its command and kept by the others."""

from __future__ import annotations

import re
from pathlib import Path


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def _pattern(name: str) -> str:
    begin, stop = _markers(name)
    return re.escape(begin) + ".*?" + re.escape(stop) + "\n?"


def wrap(name: str, body: str) -> str:
    begin, stop = _markers(name)
    return f"{begin}\n{body.strip()}\n{stop}\n"


def write(path: Path, name: str, body: str) -> None:
    """Put the section into the file: in its old place, or at the end."""
    text = Path(path).read_text() if Path(path).exists() else ""
    section = wrap(name, body)
    if re.search(_pattern(name), text, flags=re.S):
        text = re.sub(_pattern(name), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    Path(path).write_text(text)


def kept(path: Path, *names: str) -> str:
    """The named sections of an existing file, for a rewrite to keep."""
    text = Path(path).read_text() if Path(path).exists() else ""
    found = [re.search(_pattern(n), text, flags=re.S) for n in names]
    return "\n".join(m.group(0) for m in found if m)
