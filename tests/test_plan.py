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


class ClockPool:
    """Runs pieces on virtual time: a piece of a batch of L levels takes its budget (or what is left of
    the batch's levels) x the batch's time per level."""

    def __init__(self, capacity, levels, per_level):
        self.capacity, self.levels, self.per_level = capacity, levels, per_level
        self.now, self.left, self.ends, self.budgets = 0.0, dict(levels), {}, []

    def submit(self, batch, budget=None):
        name = batch[0]
        n = self.left[name] if budget is None else budget
        assert 0 < n <= self.left[name]
        self.left[name] -= n
        self.budgets.append((name, budget))
        handle = (name, len(self.budgets))
        self.ends[handle] = self.now + n * self.per_level[name]
        return handle

    def next_done(self, handles):
        handle = min(handles, key=lambda h: self.ends[h])
        self.now = self.ends.pop(handle)
        return handle, [handle[0]]


def makespan(names, workers, levels, per_level):
    from ticketlab.sweep.plan import balance

    cut = balance(
        [[n] for n in names], [set() for _ in names], workers, [levels[n] for n in names], [per_level[n] for n in names]
    )
    pool = ClockPool(workers, levels, per_level)
    dispatch(cut.work, cut.deps, pool, lambda outcome: None, budgets=cut.budgets)
    assert all(v == 0 for v in pool.left.values())  # every level computed once
    return pool.now, cut


@pytest.mark.parametrize(
    "runs, workers, expected, cuts",
    [(3, 2, 1.5, 1), (5, 2, 2.5, 1), (4, 3, 4 / 3, 2), (4, 2, 2.0, 0), (2, 2, 1.0, 0), (7, 4, 1.75, 3)],
)
def test_balance_shares_runs_levels_equally_among_workers(runs, workers, expected, cuts):
    """McNaughton by hand: R runs of 12 levels on W workers end after max(1, R / W) runs' time, with at most
    W - 1 runs cut (none where the runs divide evenly), each cut run's head before its tail."""
    names = [f"r{i}" for i in range(runs)]
    levels, per_level = dict.fromkeys(names, 12), dict.fromkeys(names, 1.0)
    span, cut = makespan(names, workers, levels, per_level)
    assert span == pytest.approx(expected * 12)
    assert sum(b is not None for b in cut.budgets) == cuts
    for i, (batch, dep) in enumerate(zip(cut.work, cut.deps)):
        for j in dep:  # a tail waits for its own head, which comes first
            assert cut.work[j] == batch and cut.budgets[j] is not None and j < i


def test_balance_weighs_levels_and_leaves_waiting_work_alone():
    # a long run (24 levels) and two short ones (6 each) on 2 workers: the long one alone sets the span
    levels, per_level = {"a": 24, "b": 6, "c": 6}, dict.fromkeys("abc", 1.0)
    span, cut = makespan(list("abc"), 2, levels, per_level)
    assert span == 24 and all(b is None for b in cut.budgets)
    # runs of unequal cost per level: 3 runs of 10 levels at 1, 1 and 2 s: 40 s of work on 2 workers
    span, cut = makespan(list("abc"), 2, dict.fromkeys("abc", 10), {"a": 1.0, "b": 1.0, "c": 2.0})
    assert span == pytest.approx(20)
    # batches that wait for a dense baseline keep plan's order; one worker or few batches: nothing to cut
    from ticketlab.sweep.plan import balance

    work = [["a"], ["b"], ["c"]]
    assert balance(work, [set(), set(), {0}], 2, [4, 4, 4], [1, 1, 1]).budgets == [None] * 3
    assert balance(work, [set()] * 3, 1, [4, 4, 4], [1, 1, 1]).work == work
    assert balance(work[:2], [set()] * 2, 2, [4, 4], [1, 1]).budgets == [None, None]
    assert balance(work, [set()] * 3, 2, [1, 1, 1], [1, 1, 1]).budgets == [None] * 3  # one level: no cut


def test_cut_weights_are_measured_step_times_only_when_every_batch_has_one():
    from ticketlab.experiment.lockstep import stack_key
    from ticketlab.sweep.choose import Chosen
    from ticketlab.sweep.executors import _per_level
    from ticketlab.sweep.layout import Decision, Layout

    small = expand(SweepSpec(base=BASE, grid={"seed": [0, 1, 2]}))
    wide = expand(SweepSpec(base={**BASE, "model": "mlp:784-64-10"}, grid={"seed": [0]}))
    work = [small[:2], small[2:], wide]
    rows = {Layout(2, 1, 2): 2.0, Layout(2, 1, 1): 1.1}
    chosen = Chosen(2, 1, {stack_key(small[0]): 2}, {stack_key(small[0]): Decision(Layout(2, 1, 2), rows, 3, "cache")})
    assert _per_level(work, chosen, 2, 1) == [2.0, 1.0, 1.0]  # the wide model's group measured nothing: runs
    chosen.decisions[stack_key(wide[0])] = Decision(Layout(2, 1, 2), {Layout(2, 1, 2): 5.0}, 1, "measured")
    assert _per_level(work, chosen, 2, 1) == [2.0, 1.1, 5.0]  # a batch of one: its own row, else the layout's
    assert _per_level(work, None, 2, 1) == [2.0, 1.0, 1.0]
