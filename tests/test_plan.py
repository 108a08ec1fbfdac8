"""The order of a sweep's batches: one batch trains each shared dense baseline, the runs that need it wait
for that batch; at most ``capacity`` batches run at a time; ``take`` may drop runs just before a start."""

import pytest

from ticketlab.experiment.dense import dense_name
from ticketlab.experiment.run import run_experiment
from ticketlab.sweep import SweepSpec, batches, expand
from ticketlab.sweep.plan import dispatch, expected_levels, plan

BASE = {
    "model": "mlp:784-16-10",
    "dataset": "synthetic",
    "val_size": 200,
    "recipe": {"steps": "20it", "eval_every": "10it"},
    "densities": [0.5],
}
GRID = {
    "method": [{"name": "oneshot", "criterion": c} for c in ("magnitude", "snip", "random", "synflow")],
    "seed": [0, 1, 2],
}


def test_followers_wait_for_the_batch_training_their_dense_baseline(tmp_path):
    specs = expand(SweepSpec(base=BASE, grid=GRID))
    work, deps = plan(specs, tmp_path, lambda chosen: batches(chosen, 1))
    assert len(work) == 12 and all(not d for d in deps[:3]) and all(len(d) == 1 for d in deps[3:])
    leaders = {dense_name(b[0]): i for i, b in enumerate(work[:3])}
    assert len(leaders) == 3
    for batch, dep in zip(work[3:], deps[3:]):
        assert dep == {leaders[dense_name(batch[0])]}
    # stacked batches: the leaders in one, the followers in another that waits for it
    work, deps = plan(specs, tmp_path, lambda chosen: batches(chosen, None, workers=1))
    assert [len(b) for b in work] == [3, 9] and deps == [set(), {0}]
    # a baseline already stored: nobody waits
    run_experiment(specs[0], tmp_path, device="cpu")
    work, deps = plan(specs, tmp_path, lambda chosen: batches(chosen, 1))
    waiting = [b[0] for b, d in zip(work, deps) if d]
    assert len(waiting) == 6 and all(s.seed != specs[0].seed for s in waiting)
    # iterative runs differing only in K share their dense level: the second waits
    lottery = expand(SweepSpec(base={**BASE, "method": {"name": "lottery"}}, grid={"method.K": [0.5, 0.8]}))
    assert plan(lottery, tmp_path, lambda chosen: batches(chosen, 1))[1] == [set(), {0}]


class FakePool:
    def __init__(self, capacity):
        self.capacity, self.started, self.running, self.peak = capacity, [], [], 0

    def submit(self, batch):
        self.started.append(batch[0]["i"])
        self.running.append(batch[0]["i"])
        self.peak = max(self.peak, len(self.running))
        return batch[0]["i"]

    def next_done(self, handles):
        handle = min(handles)
        self.running.remove(handle)
        return handle, [handle]


def test_dispatch_respects_waits_capacity_and_take():
    work = [[{"i": i}] for i in range(5)]
    deps = [set(), set(), {0}, {1}, {2, 3}]
    pool, done = FakePool(capacity=2), []
    dispatch(work, deps, pool, done.append)
    assert pool.peak == 2 and sorted(done) == [0, 1, 2, 3, 4]
    assert pool.started.index(2) > done.index(0) and pool.started.index(4) > max(done.index(2), done.index(3))
    pool, done = FakePool(capacity=8), []
    dispatch(work, deps, pool, done.append, take=lambda batch: [] if batch[0]["i"] == 0 else batch)
    assert 0 not in pool.started and sorted(done) == [1, 2, 3, 4]  # a batch taken away ends at once
    with pytest.raises(RuntimeError, match="never run"):
        dispatch(work[:1], [{3}], FakePool(capacity=1), done.append)


def test_expected_levels_follow_the_schedule():
    one = expand(SweepSpec(base={**BASE, "densities": [0.5, 0.1], "method": {"name": "oneshot", "criterion": "snip"}}))[
        0
    ]
    imp = expand(SweepSpec(base={**BASE, "densities": [0.25], "method": {"name": "lottery", "K": 0.5}}))[0]
    assert expected_levels(one) == 3 and expected_levels(imp) == 3  # dense + 0.5 + 0.25
