"""What each schedule and preset does, proven on the run directory it writes."""

import pytest
import torch

from ticketlab.config.recipe import Recipe
from ticketlab.config.spec import ExperimentSpec, MethodSpec
from ticketlab.experiment.run import run_experiment
from ticketlab.masks import Mask
from ticketlab.methods import METHODS, check_method
from ticketlab.methods.iterative import gimp_steps
from ticketlab.store import RunDir
from ticketlab.training.loop import steps_per_epoch, train

MODEL = "mlp:784-32-16-10"
RECIPE = Recipe(steps="40it", batch_size=50, lr=0.05, momentum=0.9, eval_every="20it")
T = 40


def spec(method: str, densities=(0.5,), **options) -> ExperimentSpec:
    controls = options.pop("controls", ())
    return ExperimentSpec(
        model=MODEL,
        dataset="synthetic",
        val_size=200,
        recipe=RECIPE,
        densities=densities,
        method=MethodSpec(name=method, **options),
        controls=controls,
    )


def run(tmp_path, s: ExperimentSpec):
    result = run_experiment(s, tmp_path, device="cpu")
    return result, RunDir(result.path)


def weights(run_dir: RunDir, level: int, which: str, control: str | None = None):
    return run_dir.level(level, control).weights(which)


def init_state(s: ExperimentSpec):
    from ticketlab.models import build_model, initialize

    return initialize(build_model(s.model), s.init, seed=s.seed).state_dict()


def assert_kept_equal(mask: Mask, got: dict, expected: dict):
    for name, keep in mask.items():
        assert torch.equal(got[name][keep], expected[name][keep]), name
        assert (got[name][~keep] == 0).all(), name


def test_iterative_levels_hit_every_target_density():
    from ticketlab.schedules import iterative_densities

    got = iterative_densities((0.3, 0.5), 0.8)  # by hand: K steps, clamped at 0.5 and then at 0.3
    assert got == pytest.approx([0.8, 0.64, 0.512, 0.5, 0.4, 0.32, 0.3])
    assert iterative_densities(0.5, 0.8) == pytest.approx([0.8, 0.64, 0.512, 0.5])
    # a step landing within 1% above the target goes to the target: no near-empty extra level
    assert (
        iterative_densities(0.018, 0.8)[-2:] == pytest.approx([0.8**17, 0.018])
        and len(iterative_densities(0.018, 0.8)) == 18
    )
    with pytest.raises(ValueError, match="target densities"):
        iterative_densities((0.5, 1.5), 0.8)


def test_iterative_densities_follow_K_exactly_and_masks_nest(tmp_path):
    s = spec("lottery", densities=(0.8**4,), K=0.8)
    result, rd = run(tmp_path, s)
    levels = [r for r in result.rows if not r["control"]]
    assert [r["level"] for r in levels] == [0, 1, 2, 3, 4]
    total = levels[0]["total"]
    for r in levels:
        assert r["kept"] == round(0.8 ** r["level"] * total)
    for level in range(1, 5):
        prev, cur = rd.level(level - 1).mask(), rd.level(level).mask()
        assert all(not (cur[k] & ~prev[k]).any() for k in cur)


def test_lottery_rewinds_kept_weights_to_step_zero_exactly(tmp_path):
    s = spec("lottery", densities=(0.64,))
    _, rd = run(tmp_path, s)
    w0 = init_state(s)
    for level in (1, 2):
        assert_kept_equal(rd.level(level).mask(), weights(rd, level, "start"), w0)
        assert rd.level(level).metrics()["start_step"] == 0


def test_lr_rewind_keeps_previous_final_weights_and_restarts_schedule(tmp_path):
    _, rd = run(tmp_path, spec("lr_rewind", densities=(0.64,)))
    for level in (1, 2):
        assert_kept_equal(rd.level(level).mask(), weights(rd, level, "start"), weights(rd, level - 1, "final"))
        assert rd.level(level).metrics()["start_step"] == 0


def test_finetune_continues_from_final_weights_at_final_lr(tmp_path):
    _, rd = run(tmp_path, spec("finetune", densities=(0.64,)))
    for level in (1, 2):
        assert_kept_equal(rd.level(level).mask(), weights(rd, level, "start"), weights(rd, level - 1, "final"))
        m = rd.level(level).metrics()
        assert m["start_step"] == level * T and m["end_step"] == (level + 1) * T


def test_sgimp_rewinds_to_the_snapshot_at_25_percent(tmp_path):
    s = spec("sgimp:75%", densities=(0.64,))
    _, rd = run(tmp_path, s)
    # independent: the dense run's weights at step 10 = 25% of 40
    from ticketlab.data import load_dataset
    from ticketlab.models import build_model, initialize

    model = initialize(build_model(MODEL), seed=0)
    ref = train(model, load_dataset("synthetic", val_size=200), RECIPE, seed=0, snapshot_steps=[10], device="cpu")
    assert_kept_equal(rd.level(1).mask(), weights(rd, 1, "start"), ref.snapshots[10])
    # level 2 rewinds along level 1's own training, to its step 10
    assert_kept_equal(rd.level(2).mask(), weights(rd, 2, "start"), weights(rd, 1, "rewind"))
    assert rd.level(2).metrics()["start_step"] == 0


def test_late_rewind_rewinds_weights_and_schedule_to_step_k(tmp_path):
    _, rd = run(tmp_path, spec("late_rewind:8it", densities=(0.64,)))
    dense_k = weights(rd, 0, "rewind")
    for level in (1, 2):
        assert_kept_equal(rd.level(level).mask(), weights(rd, level, "start"), dense_k)
        m = rd.level(level).metrics()
        assert (m["start_step"], m["end_step"]) == (8, T)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("finetune", (40, 40, 0, 0)),
        ("lottery", (40, 40, 40, 40)),
        ("late_rewind:10it", (40, 30, 30, 30)),
        ("lr_rewind", (40, 40, 0, 40)),
        ("sgimp", (40, 40, 30, 40)),
        ("sgimp:50%", (40, 40, 20, 40)),
    ],
)
def test_preset_step_counts(name, expected):
    s = gimp_steps(MethodSpec(name=name), total=40, spe=10)
    assert (s.train, s.retrain, s.rewind_params, s.rewind_lr) == expected


@pytest.mark.parametrize("bad", ["late_rewind", "late_rewind:50it", "sgimp:150%", "sgimp:abc"])
def test_bad_presets_explain(bad):
    with pytest.raises(ValueError, match="late_rewind|sgimp"):
        gimp_steps(MethodSpec(name=bad), total=40, spe=10)


def test_rewind_params_longer_than_a_level_is_rejected():
    with pytest.raises(ValueError, match="rewind_params"):
        gimp_steps(MethodSpec(name="gimp", retrain="10it", rewind_params="20it"), total=40, spe=10)


@pytest.mark.parametrize("criterion", ["synflow", "snip", "grasp_abs", "random"])
def test_any_criterion_drives_the_iterative_prune_step(tmp_path, criterion):
    result, _rd = run(tmp_path, spec("lottery", densities=(0.64,), criterion=criterion))
    assert [round(r["density"], 3) for r in result.rows] == [1.0, 0.8, 0.64]


def test_ims_prunes_in_several_rounds_per_level_and_differs_from_one_round(tmp_path):
    one, rd1 = run(tmp_path / "a", spec("lottery", densities=(0.3,), K=0.3, criterion="synflow"))
    many, rd2 = run(tmp_path / "b", spec("lottery", densities=(0.3,), K=0.3, criterion="synflow", rounds=10))
    assert one.rows[-1]["kept"] == many.rows[-1]["kept"]
    assert rd1.level(1).mask() != rd2.level(1).mask()


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
def test_upfront_multishot_and_single_shot(tmp_path, schedule):
    s = spec("multishot", densities=(0.5, 0.1), criterion="synflow", rounds=5, round_schedule=schedule)
    result, rd = run(tmp_path, s)
    assert [r["level"] for r in result.rows] == [0, 1, 2]
    assert [round(r["density"], 4) for r in result.rows] == [1.0, 0.5, 0.1]
    w0 = init_state(s)
    for level in (1, 2):  # trained from the initialisation, not nested: each density is pruned afresh
        assert_kept_equal(rd.level(level).mask(), weights(rd, level, "start"), w0)


def test_criterion_shorthand_resolves():
    from ticketlab.methods import resolve_criterion, resolve_method

    assert resolve_method(MethodSpec(name="snip")) == ("oneshot", 1)
    assert resolve_method(MethodSpec(name="synflow")) == ("multishot", 100)
    assert resolve_criterion(MethodSpec(name="lottery")) == "magnitude"
    with pytest.raises(ValueError, match="needs a criterion"):
        resolve_criterion(MethodSpec(name="oneshot"))
    assert set(METHODS.names()) >= {
        "oneshot",
        "multishot",
        "gimp",
        "lottery",
        "finetune",
        "lr_rewind",
        "sgimp",
        "late_rewind",
    }


def test_controls_are_trained_beside_each_ticket(tmp_path):
    controls = ("reinit", "shuffle_weights", "shuffle_mask", "shuffle_mask_reinit", "random_same_layer_density")
    s = spec("lottery", densities=(0.8,), controls=controls)
    result, rd = run(tmp_path, s)
    assert sorted(r["control"] for r in result.rows if r["level"] == 1) == sorted(("", *controls))
    ticket = rd.level(1).mask()
    for control in controls:
        m = rd.level(1, control).mask()
        assert m.layer_densities() == ticket.layer_densities()
        assert rd.level(1, control).metrics()["start_step"] == rd.level(1).metrics()["start_step"]


def winning_flag(row: dict, dense: dict):
    from ticketlab.methods.context import Job

    job = Job(spec=None, data=None, model=None, init_state={}, run=None, dense=dense)
    return job.is_winning(row)


def test_winning_compares_test_accuracy_at_the_early_stopping_iterations():
    """003: test accuracy at the ticket's early-stop step vs the dense run's at its early-stop step."""
    dense = {"level": 0, "control": "", "test_acc": 0.90, "early_stop_test_acc": 0.92, "early_stop_step": 500}
    ticket = {"level": 1, "control": "", "test_acc": 0.91, "early_stop_test_acc": 0.89, "early_stop_step": 400}
    assert winning_flag(ticket, dense) is False  # better at the end, worse at early stopping
    assert winning_flag({**ticket, "test_acc": 0.85, "early_stop_test_acc": 0.92}, dense) is True
    assert winning_flag({**ticket, "early_stop_test_acc": 0.95, "early_stop_step": 520}, dense) is False  # later
    assert winning_flag(dense, dense) is None  # the dense run is no candidate
    assert winning_flag({**ticket, "control": "reinit", "early_stop_test_acc": 0.95}, dense) is None
    assert winning_flag({**ticket, "early_stop_step": None, "early_stop_test_acc": None}, dense) is None
    assert winning_flag(ticket, None) is None


def test_winning_flag_in_a_run(tmp_path):
    result, _ = run(tmp_path, spec("lottery", densities=(0.8,), controls=("reinit",)))
    dense = next(r for r in result.rows if r["level"] == 0)
    assert dense["winning"] is None
    for row in result.rows:
        if row["level"] == 1:
            at_least = row["early_stop_test_acc"] >= dense["early_stop_test_acc"]
            expected = None if row["control"] else at_least and row["early_stop_step"] <= dense["early_stop_step"]
            assert row["winning"] == expected, row["control"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_repeated_runs_in_one_process_are_bit_identical(tmp_path, optimizer):
    """Same spec, several runs in one process (momentum or Adam, rewinding, a control): identical weights
    at every level. PyTorch's fused CPU SGD failed this (runs 2+ differed from run 1), so SGD is not fused;
    Adam is (Recipe.make_optimizer), and this guards it."""
    s = spec("lottery", densities=(0.5,), controls=("reinit",))
    if optimizer == "adam":
        s = s.model_copy(
            update={"recipe": s.recipe.model_copy(update={"optimizer": "adam", "lr": 1e-3, "momentum": 0.0})}
        )
    finals = []
    for i in range(6):
        progress = (lambda step, total, row: None) if i % 2 else None
        rd = RunDir(run_experiment(s, tmp_path / str(i), device="cpu", progress=progress).path)
        finals.append([rd.level(level).weights("final") for level in range(5)])
    for other in finals[1:]:
        assert all(torch.equal(a[k], b[k]) for a, b in zip(finals[0], other) for k in a)


def test_resume_after_interruption_loses_nothing_and_matches(tmp_path):
    s = spec("lottery", densities=(0.5,), controls=("reinit",))
    reference, _ = run(tmp_path / "ref", s)

    calls = {"n": 0}

    class Boom(Exception):
        pass

    def explode(step, total, row):
        calls["n"] += 1
        if calls["n"] == 120:  # inside the third training
            raise Boom

    with pytest.raises(Boom):
        run_experiment(s, tmp_path / "cut", device="cpu", progress=explode)
    done_before = sorted(p.parent.name for p in (tmp_path / "cut").glob("*/level_*/metrics.json"))
    assert done_before  # something finished before the cut
    seen: list[str] = []
    resumed = run_experiment(s, tmp_path / "cut", device="cpu", log=seen.append)
    assert sum("already done" in line for line in seen) == len(done_before)
    ref_dir, cut_dir = RunDir(reference.path), RunDir(resumed.path)
    for level in range(len([r for r in reference.rows if not r["control"]])):
        assert ref_dir.level(level).mask() == cut_dir.level(level).mask()
        a, b = weights(ref_dir, level, "final"), weights(cut_dir, level, "final")
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["lottery", "oneshot"])
def test_a_control_cut_off_after_its_ticket_is_trained_on_resume(tmp_path, method):
    """Killed between a level and its control: the rerun reads the level back and trains the control,
    exactly as the uninterrupted run did (iterative and upfront methods share this path)."""
    criterion = {"criterion": "magnitude"} if method == "oneshot" else {}
    s = spec(method, densities=(0.5,), controls=("reinit",), K=0.5, **criterion)  # one pruned level
    _first, rd = run(tmp_path, s)
    before = weights(rd, 1, "final", "reinit")
    (rd.level(1, "reinit").path / "metrics.json").unlink()
    seen: list[str] = []
    again = run_experiment(s, tmp_path, device="cpu", log=seen.append)
    assert sorted((r["level"], r["control"]) for r in again.rows) == [(0, ""), (1, ""), (1, "reinit")]
    assert [line for line in seen if "reinit" in line and "already done" not in line]  # trained again
    assert sum("already done" in line for line in seen) == 2  # levels 0 and 1
    after = weights(rd, 1, "final", "reinit")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_iterative_method_is_a_set_of_hooks_on_the_one_level_loop(tmp_path):
    """``run_levels`` calls ``prune`` for every level it trains and ``finished`` for every level (dense
    included, resumed ones too); with GIMP's default hooks it is the preset run by name."""
    from ticketlab.data import load_dataset
    from ticketlab.experiment.run import prepare_run
    from ticketlab.methods import Job
    from ticketlab.methods.levels import Gimp, run_levels

    s = spec("lottery", densities=(0.64,), K=0.8)
    calls: list[tuple] = []

    class Recording(Gimp):
        def prune(self, previous, density, index):
            calls.append(("prune", index, previous.index))
            return super().prune(previous, density, index)

        def finished(self, level, last):
            calls.append(("finished", level.index, last))

    def run_hooks() -> RunDir:
        data = load_dataset(s.dataset, val_size=s.val_size, seed=s.split_seed, device="cpu")
        rd, model, init = prepare_run(s, data, tmp_path / "hooks", torch.device("cpu"))
        job = Job(s, data, model, init, rd)
        run_levels(job, Recording(job, gimp_steps(s.method, T, steps_per_epoch(len(data.x_train), 50))))
        return rd

    rd = run_hooks()
    assert calls == [
        ("finished", 0, False),
        ("prune", 1, 0),
        ("finished", 1, False),
        ("prune", 2, 1),
        ("finished", 2, True),
    ]
    calls.clear()
    run_hooks()  # everything is read back: no pruning, the same calls to finished
    assert calls == [("finished", 0, False), ("finished", 1, False), ("finished", 2, True)]
    _, named = run(tmp_path / "named", s)
    for level in range(3):
        assert rd.level(level).mask() == named.level(level).mask()
        a, b = weights(rd, level, "final"), weights(named, level, "final")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_fail_on_collapse(tmp_path):
    from ticketlab.masks import LayerCollapseError

    with pytest.raises(LayerCollapseError, match="collapsed"):
        run(tmp_path, spec("oneshot", densities=(0.0005,), criterion="snip", fail_on_collapse=True))


def test_initial_weights_are_stored_once_and_shared_by_methods(tmp_path):
    a, _ = run(tmp_path, spec("lottery", densities=(0.8,)))
    b, _ = run(tmp_path, spec("snip", densities=(0.8,)))
    inits = list((tmp_path / "inits").glob("*.safetensors"))
    assert len(inits) == 1
    wa, wb = weights(RunDir(a.path), 0, "start"), weights(RunDir(b.path), 0, "start")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(torch.equal(wa[k], v) for k, v in init_state(spec("lottery")).items())


def test_method_options_are_validated_by_name():
    with pytest.raises(ValueError, match="takes no options"):
        check_method(MethodSpec(name="lottery", options={"regrow": 0.1}))
