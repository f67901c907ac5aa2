"""Shared pieces of `make test-deploy`: commands, the cache of Debian roots, container engines.

Everything here runs as root on this kind of machine (a VM whose PID 1 is not systemd, cgroups in
hybrid mode, no CAP_SYS_RESOURCE in the bounding set, a kernel without the audit subsystem). No image
registry is reachable, so bases are Debian roots made with mmdebstrap from the package mirror, cached
under $OPENCSP_DEPLOY_CACHE (default /var/cache/opencsp-deploy-test) by a hash of how they are made.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("OPENCSP_DEPLOY_CACHE", "/var/cache/opencsp-deploy-test"))
SUITE = "bookworm"
TOOLS = ("buildah", "podman", "mmdebstrap", "systemd-nspawn", "ip", "ssh", "ssh-keygen", "runc")


def run(
    args: Sequence[str | Path],
    *,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output, so a failed step says what failed."""
    command = [str(arg) for arg in args]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        input=input,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"`{' '.join(command)}` exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


@contextmanager
def locked(name: str) -> Iterator[None]:
    """One builder at a time per cached artefact, across processes (xdist workers, other runs)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def debian_root(name: str, packages: Sequence[str], *, tar: bool, options: Sequence[str] = ()) -> Path:
    """A bookworm root with `packages` (minbase variant), built once and reused while its recipe holds.

    A directory (for systemd-nspawn) or a tarball (a container base). Built into a temporary name and
    renamed, so an interrupted build never leaves a half root behind under the final name."""
    recipe = json.dumps([SUITE, sorted(packages), list(options), tar], sort_keys=True)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    target = CACHE / f"{name}-{SUITE}-{key}{'.tar' if tar else ''}"
    with locked(target.name):
        if target.exists():
            return target
        partial = target.with_name(target.name + ".partial")
        if partial.is_dir():
            shutil.rmtree(partial)
        partial.unlink(missing_ok=True)
        args: list[str | Path] = ["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}"]
        args += [*options, "--format=tar" if tar else "--format=directory", SUITE, partial]
        run(args, timeout=900)
        partial.rename(target)
    return target


class Engine:
    """buildah and podman on a storage of the test's own (vfs driver: no overlay mounts needed).

    podman's OCI runtime here is runc with no default ulimits: crun refuses hybrid cgroups ("cgroups in
    hybrid mode not supported") and both fail to raise RLIMIT_NOFILE/NPROC without CAP_SYS_RESOURCE
    ("error setting rlimit type 7: operation not permitted") while containers.conf adds default ulimits.
    The cgroupfs manager and file events because no systemd runs as PID 1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        conf = root / "containers.conf"
        root.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "[containers]\ndefault_ulimits = []\n"
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
        )
        self.env = {"CONTAINERS_CONF": str(conf)}
        self.storage = [
            "--root", str(root / "storage"),
            "--runroot", f"/run/opencsp-deploy-test-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}",
            "--storage-driver", "vfs",
        ]  # fmt: skip

    def buildah(self, *args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run(["buildah", *self.storage, *args], env=self.env, timeout=timeout)

    def podman(
        self, *args: str | Path, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", *self.storage, *args], env=self.env, timeout=timeout, check=check)

    def image_exists(self, name: str) -> bool:
        return self.podman("image", "exists", name, check=False).returncode == 0
