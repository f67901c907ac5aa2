"""Finding the lint tools of deploy/requirements-lint.txt, which live in a venv of their own.

Checkov pins old versions of packages the gateway also uses, so the tools are installed apart
(`.venv-deploy` by default) and run as programs, never imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INSTALL_HINT = (
    "python3.11 -m venv .venv-deploy && .venv-deploy/bin/pip install -r deploy/requirements-lint.txt"
)


def tool_dirs() -> list[Path]:
    dirs = []
    if configured := os.environ.get("OPENCSP_DEPLOY_TOOLS_BIN"):
        dirs.append(Path(configured))
    dirs += [REPO / ".venv-deploy" / "bin", Path(sys.executable).parent]
    return dirs


def find_tool(name: str) -> str | None:
    for directory in tool_dirs():
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def require_tool(name: str) -> str:
    """The tool's path; skips the test when it is missing, or fails when tools are required."""
    path = find_tool(name)
    if path is None:
        message = f"{name} is not installed; install the deploy lint tools: {INSTALL_HINT}"
        if os.environ.get("OPENCSP_DEPLOY_TOOLS_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_tool(
    name: str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a tool with its own venv's bin first on PATH (ansible and checkov start helpers by name)."""
    path = require_tool(name)
    environment = dict(os.environ)
    environment["PATH"] = os.pathsep.join([str(Path(path).parent), environment.get("PATH", "")])
    # The worktree on PYTHONPATH (how helpers run the suite) would shadow the tools' own packages:
    # the gateway's `schema` hides the PyPI `schema` that checkov's cloudsplaining imports.
    environment.pop("PYTHONPATH", None)
    environment.update(env or {})
    return subprocess.run(
        [path, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
