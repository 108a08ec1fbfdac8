"""Claims on run directories: exclusive creation, renewal, expiry, takeover of a dead owner's claim."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

from ticketlab.sweep.claims import CLAIM_FILE, ClaimKeeper, Owner, _take_over, read_claim, try_claim


def write_claim(run, **fields) -> None:
    data = {"host": "elsewhere", "pid": 1, "started": time.time(), "expires": time.time() + 60, "token": "theirs"}
    data.update(fields)
    run.mkdir(parents=True, exist_ok=True)
    (run / CLAIM_FILE).write_text(json.dumps(data))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_is_exclusive_and_says_who_holds_it(tmp_path):
    run = tmp_path / "run"
    claim = try_claim(run, ttl=30)
    assert claim is not None and try_claim(run, ttl=30) is None
    owner = read_claim(run)
    assert owner.host == socket.gethostname() and owner.pid == os.getpid() and owner.token == claim.token
    assert owner.started <= time.time() <= owner.expires <= time.time() + 30
    assert not owner.stale() and owner.describe().startswith(f"{socket.gethostname()}:{os.getpid()} since ")
    claim.release()
    assert read_claim(run) is None and try_claim(run) is not None


def test_renewal_moves_the_expiry_and_a_lost_claim_is_not_renewed(tmp_path):
    run = tmp_path / "run"
    claim = try_claim(run, ttl=30)
    first = read_claim(run).expires
    time.sleep(0.05)
    assert claim.renew() and read_claim(run).expires > first
    write_claim(run, token="someone else")  # taken over meanwhile
    assert not claim.renew() and read_claim(run).token == "someone else"
    claim.release()  # not ours: left in place
    assert read_claim(run).token == "someone else"


def test_a_live_claim_of_another_host_is_kept_until_it_expires(tmp_path):
    run = tmp_path / "run"
    write_claim(run, host="other-machine", pid=dead_pid())  # a pid dead here says nothing about another host
    assert try_claim(run) is None
    write_claim(run, host="other-machine", expires=time.time() - 1)
    claim = try_claim(run)
    assert claim is not None and read_claim(run).token == claim.token


def test_a_dead_owner_on_this_host_is_taken_over_at_once(tmp_path):
    run = tmp_path / "run"
    write_claim(run, host=socket.gethostname(), pid=os.getpid())  # alive: kept
    assert try_claim(run) is None
    write_claim(run, host=socket.gethostname(), pid=dead_pid())
    assert read_claim(run).stale() and try_claim(run) is not None


def test_an_unreadable_claim_is_held_until_ttl_after_its_last_change(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / CLAIM_FILE).write_text("")  # its creator died between O_EXCL and writing
    assert read_claim(run, ttl=60).token == "" and try_claim(run, ttl=60) is None
    old = time.time() - 120
    os.utime(run / CLAIM_FILE, (old, old))
    assert try_claim(run, ttl=60) is not None


def test_of_many_contenders_for_a_stale_claim_exactly_one_wins(tmp_path):
    for round_ in range(10):
        run = tmp_path / f"run{round_}"
        write_claim(run, expires=time.time() - 1)
        barrier = threading.Barrier(6)
        won = []

        def contend(run=run, barrier=barrier, won=won):
            barrier.wait()
            claim = try_claim(run)
            if claim is not None:
                won.append(claim.token)

        threads = [threading.Thread(target=contend) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and read_claim(run).token == won[0]
        assert sorted(p.name for p in run.iterdir()) == [CLAIM_FILE]


def test_a_takeover_removes_only_the_claim_judged_stale_and_only_under_its_lock(tmp_path):
    run = tmp_path / "run"
    write_claim(run, token="fresh")  # judged stale as token "old", replaced since by a live claim
    _take_over(run / CLAIM_FILE, Owner("elsewhere", 1, 0.0, 0.0, "old"), 60)
    assert read_claim(run).token == "fresh"
    write_claim(run, token="old", expires=time.time() - 1)
    lock = run / f".{CLAIM_FILE}.lock"
    lock.write_text("")  # another sweep is taking it over
    _take_over(run / CLAIM_FILE, Owner("elsewhere", 1, 0.0, 0.0, "old"), 60)
    assert read_claim(run).token == "old" and lock.exists()
    os.utime(lock, (time.time() - 60, time.time() - 60))  # ... and died doing so: its lock is cleared
    assert try_claim(run) is not None and not lock.exists()
    assert sorted(p.name for p in run.iterdir()) == [CLAIM_FILE]


def test_the_keeper_renews_until_it_releases(tmp_path):
    keeper = ClaimKeeper(ttl=0.6)
    try:
        assert keeper.claim(tmp_path / "a") and keeper.claim(tmp_path / "b")
        assert not keeper.claim(tmp_path / "a")
        time.sleep(1.5)  # past two ttls: alive only through renewal
        assert not read_claim(tmp_path / "a", ttl=0.6).stale() and try_claim(tmp_path / "b", ttl=0.6) is None
        keeper.release(tmp_path / "a")
        assert read_claim(tmp_path / "a") is None
    finally:
        keeper.close()
    assert read_claim(tmp_path / "b") is None
