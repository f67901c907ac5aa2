"""`make test-deploy` only: these tests need root, Debian's container tools and minutes of time.

tests/conftest.py leaves this directory out unless OPENCSP_LIVE_DEPLOY=1 (the make target sets it),
so `make test` never builds an image or boots a host. Missing tools fail here, naming the package."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.deploy_live.support import TOOLS


@pytest.fixture(scope="session", autouse=True)
def live_machine() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/deploy_live needs root (network namespaces, systemd-nspawn, podman)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make test-deploy`, which installs them with apt-get")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the tests measured or could not do here (their `note` properties), also under xdist."""
    notes = [
        str(value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", [])
        if name == "note"
    ]
    if notes:
        terminalreporter.section("deploy path: measured and not possible here")
        for note in notes:
            terminalreporter.line(note)
