"""A two-node Ray cluster on this machine for tests: a head node, and a second node in its own mount
namespace (``unshare -m``, needs root) with tmpfs mounted over chosen folders, so that the second node
sees none of their contents and nothing it writes there reaches this machine's view.

Each ``ray start --block`` runs in a session of its own; stopping sends SIGTERM to it (it stops its Ray
processes), then SIGKILL to whatever is left in that session. Nothing else on the machine is touched
(no ``ray stop``, which would stop every Ray instance here). Ports and the temp folder are private.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
SRC = Path(__file__).resolve().parents[1] / "src"


def usable() -> str | None:
    """Why this machine cannot run the cluster, or None."""
    if os.geteuid() != 0:
        return "unshare -m needs root"
    if shutil.which("unshare") is None or not Path(RAY).exists():
        return "unshare or ray missing"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return None if probe.returncode == 0 else f"unshare not permitted: {probe.stderr.decode().strip()}"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _session(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == pid:  # session id
                out.append(int(entry.name))
    return out


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
    for pid in _session(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _wait_started(log: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise RuntimeError(f"ray node did not start:\n{log.read_text(errors='replace')[-3000:]}")


@contextmanager
def two_nodes(
    private: Sequence[Path],
    env: dict[str, str],
    node2_env: dict[str, str],
    check: str,
    head_cpus: int = 1,
    node2_cpus: int = 1,
) -> Iterator[str]:
    """Yield the head's address while a head node and a second node run. The second node has a tmpfs over
    each folder of ``private``, ``node2_env`` on top of ``env``, and starts only if the shell command
    ``check`` succeeds inside its namespace (e.g. that a dataset cannot be found there)."""
    temp = Path(tempfile.mkdtemp(prefix="tlr", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port, client, agent1, agent2, dash = free_ports(5)
    base = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(SRC), **env}
    procs: list[subprocess.Popen] = []
    try:
        head_log = temp / "head.log"
        procs.append(
            subprocess.Popen(
                [
                    RAY,
                    "start",
                    "--head",
                    f"--port={port}",
                    "--node-ip-address=127.0.0.1",
                    f"--num-cpus={head_cpus}",
                    f"--temp-dir={temp}",
                    "--include-dashboard=false",
                    f"--dashboard-port={dash}",
                    f"--ray-client-server-port={client}",
                    f"--dashboard-agent-listen-port={agent1}",
                    "--disable-usage-stats",
                    "--block",
                ],
                stdout=head_log.open("w"),
                stderr=subprocess.STDOUT,
                env=base,
                start_new_session=True,
            )
        )
        _wait_started(head_log, procs[0], 300)
        mounts = "".join(f"mount -t tmpfs tmpfs {shlex.quote(str(p))} || exit 3\n" for p in private)
        script = (
            f"{mounts}{check} || exit 5\n"
            f"exec {RAY} start --address=127.0.0.1:{port} --num-cpus={node2_cpus} --temp-dir={temp} "
            f"--dashboard-agent-listen-port={agent2} --disable-usage-stats --block"
        )
        node_log = temp / "node2.log"
        procs.append(
            subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdout=node_log.open("w"),
                stderr=subprocess.STDOUT,
                env={**base, **node2_env},
                start_new_session=True,
            )
        )
        _wait_started(node_log, procs[1], 300)
        yield f"127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(temp, ignore_errors=True)
