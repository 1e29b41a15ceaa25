"""The code follows the parties: arrows between them only through common/
and the key holders' HTTP client. Read from the sources' own imports."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imports(folder: str) -> dict[str, set[str]]:
    out = {}
    for f in (REPO / folder).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        out[str(f.relative_to(REPO))] = names
    return out


def test_parties_import_each_other_only_through_common_and_the_holder_client():
    for f, names in imports("mdms").items():
        bad = {n for n in names if n.split(".")[0] in ("gateway", "host_tools")
               or (n.startswith("authority") and n != "authority.client")}
        assert not bad, f"{f} imports {bad}"
    for party, others in (("gateway", ("authority", "mdms", "host_tools")),
                          ("authority", ("gateway", "mdms", "host_tools")),
                          ("common", ("gateway", "authority", "mdms", "host_tools"))):
        for f, names in imports(party).items():
            bad = {n for n in names if n.split(".")[0] in others}
            assert not bad, f"{f} imports {bad}"


def test_sql_lives_in_each_partys_store():
    # The MDMS's store is split by what it serves: the web app's state,
    # the intake's tables, the releases', and the schema with its placement.
    stores = {"gateway/store.py", "mdms/store.py", "mdms/intakestore.py", "mdms/releasestore.py",
              "mdms/schema.py", "mdms/db.py"}
    for folder in ("gateway", "mdms"):
        for f in (REPO / folder).rglob("*.py"):
            rel = str(f.relative_to(REPO))
            if rel in stores:
                continue
            text = f.read_text()
            for verb in ("SELECT ", "INSERT ", "UPDATE ", "DELETE FROM"):
                assert verb not in text, f"{rel} has SQL ({verb.strip()})"
