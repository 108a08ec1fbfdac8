"""Claims on run directories: who is computing a run, so that two sweeps on one folder never compute the
same run at once and a crashed owner's run is taken over.

A claim is ``<run>/claim.json`` = {host, pid, started, expires, token}. It is created with
``O_CREAT | O_EXCL`` (of several sweeps exactly one creates it), renewed by its owner every ``ttl / 3``
seconds while the run is computed (an atomic replace), and removed when the run ends. A claim is stale
once it has expired, or at once when its pid is dead on this host (a sweep killed with SIGKILL). Taking a
stale claim over renames it aside, which exactly one contender manages, then creates a fresh one.

What this does not prevent: an owner stalled longer than ``ttl`` (e.g. a suspended machine) loses its
claim and may compute alongside the new owner. Both then write the same deterministic files atomically,
so the run is computed twice but never damaged.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ticketlab.files import atomic_write_json

CLAIM_FILE = "claim.json"
DEFAULT_TTL = 60.0  # seconds a claim lives without renewal
LOCK_TTL = 10.0  # seconds after which a takeover lock is known to be left by a dead sweep (held for microseconds)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:  # a zombie (killed, not yet reaped) is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class Owner:
    """What a claim file says (``token`` empty for a claim still being written or unreadable)."""

    host: str
    pid: int
    started: float
    expires: float
    token: str

    def stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if now >= self.expires:
            return True
        return self.host == socket.gethostname() and self.pid > 0 and not _pid_alive(self.pid)

    def describe(self) -> str:
        return f"{self.host}:{self.pid} since {time.strftime('%H:%M:%S', time.localtime(self.started))}"


def read_claim(run_path: str | os.PathLike, ttl: float = DEFAULT_TTL) -> Owner | None:
    """The claim on a run directory, or None when there is none. A claim file that cannot be read (its
    creator is writing it, or died doing so) counts as held until ``ttl`` after it was last modified."""
    path = Path(run_path) / CLAIM_FILE
    try:
        text = path.read_text()
        stamp = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return Owner(
            str(data["host"]), int(data["pid"]), float(data["started"]), float(data["expires"]), str(data["token"])
        )
    except (ValueError, KeyError, TypeError):
        return Owner("?", 0, stamp, stamp + ttl, "")


class Claim:
    """A claim this process holds on one run directory."""

    def __init__(self, run_path: Path, token: str, ttl: float, started: float) -> None:
        self.run_path, self.token, self.ttl, self.started = run_path, token, ttl, started

    @property
    def path(self) -> Path:
        return self.run_path / CLAIM_FILE

    def _content(self) -> dict:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "expires": time.time() + self.ttl,
            "token": self.token,
        }

    def held(self) -> bool:
        owner = read_claim(self.run_path, self.ttl)
        return owner is not None and owner.token == self.token

    def renew(self) -> bool:
        """Push the expiry ``ttl`` ahead; False when the claim was lost (taken over after expiring)."""
        if not self.held():
            return False
        atomic_write_json(self.path, self._content())
        return True

    def release(self) -> None:
        if self.held():
            self.path.unlink(missing_ok=True)


def try_claim(run_path: str | os.PathLike, ttl: float = DEFAULT_TTL) -> Claim | None:
    """Claim a run directory (created if missing): the claim, or None while someone else holds a live one."""
    run_path = Path(run_path)
    run_path.mkdir(parents=True, exist_ok=True)
    path = run_path / CLAIM_FILE
    for _ in range(4):  # each pass either succeeds, finds a live claim, or clears a stale one
        claim = Claim(run_path, uuid.uuid4().hex, ttl, time.time())
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_claim(run_path, ttl)
            if owner is None:
                continue  # released meanwhile
            if not owner.stale():
                return None
            _take_over(path, owner, ttl)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(claim._content()))
            handle.flush()
            os.fsync(handle.fileno())
        return claim
    return None


def _take_over(path: Path, owner: Owner, ttl: float) -> None:
    """Remove a stale claim, under a takeover lock (``O_EXCL`` too) so that of several sweeps taking it
    over only one removes it, and only if it is still the claim judged stale; the fresh claim is then
    created with ``O_EXCL`` like any other. A lock left by a sweep that died taking over is cleared after
    ``LOCK_TTL`` seconds."""
    lock = path.with_name(f".{CLAIM_FILE}.lock")
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        try:
            if time.time() - lock.stat().st_mtime > LOCK_TTL:
                lock.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return
    try:
        current = read_claim(path.parent, ttl)
        if current is not None and current.token == owner.token and current.stale():
            path.unlink(missing_ok=True)
    finally:
        lock.unlink(missing_ok=True)


class ClaimKeeper:
    """Holds this sweep's claims and renews them from a background thread until released."""

    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        self.ttl = ttl
        self._claims: dict[Path, Claim] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True, name="ticketlab-claims")
        self._thread.start()

    def claim(self, run_path: str | os.PathLike) -> bool:
        claim = try_claim(run_path, self.ttl)
        if claim is not None:
            with self._lock:
                self._claims[claim.run_path] = claim
        return claim is not None

    def holds(self, run_path: str | os.PathLike) -> bool:
        """Whether this keeper still holds its claim on ``run_path`` (not released, not taken over)."""
        with self._lock:
            claim = self._claims.get(Path(run_path))
        return claim is not None and claim.held()

    def release(self, run_path: str | os.PathLike) -> None:
        with self._lock:  # not while the renewing thread rewrites it (that would bring the file back)
            claim = self._claims.pop(Path(run_path), None)
            if claim is not None:
                claim.release()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            claims, self._claims = list(self._claims.values()), {}
        for claim in claims:
            claim.release()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with self._lock:
                claims = list(self._claims.values())
            for claim in claims:
                with (
                    self._lock,
                    contextlib.suppress(OSError),
                ):  # OSError: the folder was removed; the run fails on its own
                    if self._claims.get(claim.run_path) is claim:  # not released meanwhile
                        claim.renew()
