"""Shared fixtures, and the plugin that runs firmware tests inside the
MicroPython Unix port.

tests/firmware/mptest_*.py are MicroPython modules. Each is run once by
tests/firmware/mprunner.py in `micropython`; every test_* function in it
becomes one pytest item with its own pass or failure.

Under CI (CI=true) a skipped test is turned into a failure: the firmware,
interop and real-data tests must never be skipped there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from host_tools import fleet  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data" / "umass-apartments-2016"
MP_TEST_HEAP = "256K"  # unit tests; the whole-firmware 64K runs are separate tests


# --- MicroPython test collection ---------------------------------------------

def pytest_collect_file(parent, file_path):
    if file_path.suffix == ".py" and file_path.name.startswith("mptest_"):
        return MicroPythonFile.from_parent(parent, path=file_path)
    return None


class MicroPythonFailure(Exception):
    pass


class MicroPythonFile(pytest.File):
    """Its items are named from the module's source, so that every pytest
    worker (pytest-xdist) collects the same ones without running anything;
    the module runs once, in MicroPython, when its first item runs."""

    def collect(self):
        names = re.findall(r"^def (test_\w+)\(", self.path.read_text(), re.M)
        for name in names:
            yield MicroPythonItem.from_parent(self, name=name)

    def results(self) -> tuple[dict, str]:
        if not hasattr(self, "_results"):
            self._results = self._run()
        return self._results

    def _run(self) -> tuple[dict, str]:
        try:
            binary = fleet.micropython()
        except fleet.FleetError as e:
            return {}, str(e)
        # "# mp-path: a b" in a test module puts those repo folders first on
        # its MicroPython path (e.g. another board layer and hardware fakes).
        extra = []
        for line in self.path.read_text().splitlines()[:5]:
            if line.startswith("# mp-path:"):
                extra = [REPO / p for p in line.split(":", 1)[1].split()]
        env = fleet.mp_env(extra + [self.path.parent, REPO / "host_tools" / "mp"])
        env["GVTEST_TMP"] = tempfile.mkdtemp(prefix=f"{self.path.stem}-")
        proc = subprocess.run(
            [binary, "-X", f"heapsize={MP_TEST_HEAP}", str(self.path.parent / "mprunner.py"),
             self.path.stem], cwd=self.path.parent, env=env, capture_output=True, text=True,
            timeout=300)
        out = proc.stdout + proc.stderr
        results = {}
        for line in out.splitlines():
            if line.startswith("GVTEST PASS "):
                results[line.split()[2]] = ("PASS", "")
            elif line.startswith("GVTEST FAIL "):
                name = line.split()[2]
                results[name] = ("FAIL", line[len("GVTEST FAIL ") + len(name) + 1:] + "\n" + out)
        if "GVTEST DONE" not in out:
            return results, f"runner crashed:\n{out}"
        return results, out


class MicroPythonItem(pytest.Item):
    def runtest(self):
        results, out = self.parent.results()
        status, detail = results.get(self.name, ("FAIL", f"{self.name} did not run:\n{out}"))
        if status != "PASS":
            raise MicroPythonFailure(detail)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonFailure):
            return f"MicroPython test failed: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"[micropython] {self.name}"


# --- CI: a skip is a failure ---------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI, which must run every test: {reason}"


# --- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="session")
def sample_files() -> list[Path]:
    files = sorted((REPO / "data" / "sample").glob("household*.csv"))
    assert len(files) == 10, "data/sample/ must hold the 10 shipped sample households"
    return files


@pytest.fixture(scope="session")
def umass_files() -> list[Path]:
    files = sorted(SHARED_DATA.glob("Apt*_2016-01-01_07.csv"),
                   key=lambda p: int(p.name[3:p.name.index("_")]))
    if len(files) != 10:
        pytest.skip(f"real UMass data not found in {SHARED_DATA}")
    return files


def _server(kind: str):
    """Start a server of host_tools/pgcluster.py, or skip (a skip fails CI)."""
    from host_tools import pgcluster as pg

    try:
        return getattr(pg, kind)()
    except pg.PostgresUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the MDMS tests."""
    cluster = _server("Cluster")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def citus():
    """A real 3-node Citus cluster (a coordinator, two workers) for the MDMS tests."""
    cluster = _server("CitusCluster")
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql", "citus"])
def mdms_db(request, tmp_path):
    """An MDMS database URL: SQLite in a temporary file, a fresh database on
    the test PostgreSQL server, or one on the test Citus cluster (its tables
    distributed). Tests that take it run against all three."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mdms.db'}"
    server = {"postgresql": "postgres", "citus": "citus"}[request.param]
    return request.getfixturevalue(server).new_database()
