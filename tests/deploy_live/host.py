"""A booted Debian host standing in for a new VM: systemd as PID 1 under systemd-nspawn, sshd, and a
cloud-init-like user `opencsp` with the test's key and passwordless sudo.

It lives in a network namespace of its own, joined by a veth pair to a second namespace, the
"runner", where Ansible and the gateway stand-in run. Both ends carry 10.231.47.0/30 addresses that
exist only inside those two namespaces: nothing is routed to or from the machine's own network.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.deploy_live.support import run

RUNNER_ADDRESS = "10.231.47.1"
HOST_ADDRESS = "10.231.47.2"
HOST_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo", "iproute2", "procps",
    # What the roles install, present already: the booted host reaches no package mirror.
    "python3-apt", "nftables", "auditd", "unattended-upgrades", "apt-listchanges", "lynis",
)  # fmt: skip
# apt's lists stay, so that the roles' package tasks find the packages installed without a download.
HOST_OPTIONS = ("--skip=cleanup/apt/lists",)


@dataclass(frozen=True)
class Host:
    runner: str  # the runner's network namespace
    key: Path
    hostname: str

    def in_runner(self, *args: str | Path) -> list[str | Path]:
        return ["ip", "netns", "exec", self.runner, *args]

    def ssh_options(self) -> list[str]:
        return [
            "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
        ]  # fmt: skip

    def root(self, command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`command` as root on the host, over SSH from the runner namespace."""
        return run(
            self.in_runner(
                "ssh", *self.ssh_options(), f"opencsp@{HOST_ADDRESS}", f"sudo sh -c {quote(command)}"
            ),
            check=check,
            timeout=300,
        )


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def prepare(root: Path, public_key: str, hostname: str) -> None:
    """What cloud-init does on a Proxmox template: the user, its key, sudo, the host name."""
    run(["chroot", root, "useradd", "--create-home", "--shell", "/bin/bash", "opencsp"])
    ssh_dir = root / "home" / "opencsp" / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text(public_key)
    run(["chroot", root, "chown", "-R", "opencsp:opencsp", "/home/opencsp/.ssh"])
    sudoers = root / "etc" / "sudoers.d" / "90-cloud-init-users"
    sudoers.write_text("opencsp ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    (root / "etc" / "hostname").write_text(hostname + "\n")
    with (root / "etc" / "hosts").open("a") as hosts:
        hosts.write(f"127.0.1.1 {hostname}\n")


@contextmanager
def namespaces(tag: str) -> Iterator[tuple[str, str]]:
    runner, guest = f"ocsp-r-{tag}", f"ocsp-h-{tag}"
    run(["ip", "netns", "add", runner])
    try:
        run(["ip", "netns", "add", guest])
        try:
            run(
                [
                    "ip",
                    "-n",
                    runner,
                    "link",
                    "add",
                    "vr0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "vh0",
                    "netns",
                    guest,
                ]
            )
            run(["ip", "-n", runner, "addr", "add", f"{RUNNER_ADDRESS}/30", "dev", "vr0"])
            run(["ip", "-n", guest, "addr", "add", f"{HOST_ADDRESS}/30", "dev", "vh0"])
            for namespace, link in ((runner, "vr0"), (guest, "vh0")):
                run(["ip", "-n", namespace, "link", "set", "lo", "up"])
                run(["ip", "-n", namespace, "link", "set", link, "up"])
            yield runner, guest
        finally:
            run(["ip", "netns", "del", guest], check=False)
    finally:
        run(["ip", "netns", "del", runner], check=False)


@contextmanager
def booted_host(pristine: Path, workdir: Path, hostname: str) -> Iterator[Host]:
    """A fresh copy of the cached root, booted; shut down and removed afterwards."""
    root = workdir / "root"
    run(["cp", "-a", "--reflink=auto", pristine, root])
    key = workdir / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy-test", "-f", key])
    prepare(root, key.with_suffix(".pub").read_text(), hostname)
    tag = str(os.getpid())
    try:
        with namespaces(tag) as (runner, guest), (workdir / "console.log").open("w") as console:
            boot = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--boot",
                    f"--directory={root}",
                    f"--machine=ocsp-test-{tag}",
                    f"--network-namespace-path=/run/netns/{guest}",
                    # nspawn keeps CAP_NET_ADMIN only with --private-network; nftables needs it.
                    "--capability=CAP_NET_ADMIN",
                    "--register=no",
                    "--keep-unit",
                    "--console=passive",
                ],
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            host = Host(runner=runner, key=key, hostname=hostname)
            try:
                wait_for_ssh(host, boot, workdir / "console.log")
                yield host
            finally:
                shutdown(boot)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wait_for_ssh(host: Host, boot: subprocess.Popen[bytes], console: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        probe = host.root("systemctl is-system-running --wait || true", check=False)
        if probe.returncode == 0:
            return
        if boot.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"the host did not come up over SSH:\n{probe.stderr}\n{console.read_text()[-3000:]}"
            )
        time.sleep(1)


def shutdown(boot: subprocess.Popen[bytes]) -> None:
    """SIGTERM makes nspawn ask systemd to power off; SIGKILL the whole group if it will not."""
    if boot.poll() is None:
        boot.terminate()
        try:
            boot.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(boot.pid, signal.SIGKILL)
            boot.wait(timeout=30)
