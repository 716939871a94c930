"""Test-suite wide behaviour.

- Data: a test (or a whole test module) that needs a file of the data folder which is not
  there is skipped, with the missing path as the reason, instead of failing with
  FileNotFoundError: ``pytest`` on a clone without data runs what it can. ``make data``
  fetches the data (docs/data.md). Only :class:`mtdnn.paths.DataMissing` (raised by
  ``data_path``) skips; any other missing file is a failure as before.
- Markers (pytest.ini): ``slow`` for the tests that take over 20 s here (tests/slow_tests.txt
  lists them by node id, from a ``--durations`` run); ``pytest -m "not slow"`` leaves them out.
"""
import re
from pathlib import Path

import pytest
from _pytest.reports import CollectReport

from mtdnn.paths import DataMissing

SLOW = Path(__file__).with_name("slow_tests.txt")


def _reason(path: str) -> str:
    return f"data missing: {path} (run `make data`, see docs/data.md)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A setup or test body that stops on missing data is reported as skipped."""
    rep = yield
    if call.excinfo is not None and call.excinfo.errisinstance(DataMissing):
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {_reason(call.excinfo.value.filename)}")
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A test module whose import needs missing data (``X = data_path(...)`` at module level) is
    reported as skipped, not as a collection error."""
    rep = yield
    if rep.failed and isinstance(collector, pytest.Module):
        m = re.search(r"mtdnn\.paths\.DataMissing: (\S+) does not exist", str(rep.longrepr))
        if m:
            return CollectReport(rep.nodeid, "skipped", (str(collector.path), 0, f"Skipped: {_reason(m.group(1))}"),
                                 [])
    return rep


def pytest_collection_modifyitems(config, items):
    slow = {line.split("#")[0].strip() for line in SLOW.read_text().splitlines()} - {""} if SLOW.exists() else set()
    for item in items:
        if item.nodeid in slow or item.nodeid.split("[")[0] in slow:
            item.add_marker(pytest.mark.slow)
