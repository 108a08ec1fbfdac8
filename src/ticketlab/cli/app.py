"""The ``ticketlab`` command: a thin layer that parses flags, calls the API and prints tables."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find, train and study lottery tickets.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: where they are found.")
app.add_typer(data_app, name="data")

from ticketlab.cli.common import (  # noqa: E402
    L2,
    BatchSize,
    CliError,
    DataRoot,
    DatasetOpt,
    Device,
    EndOnBest,
    EvalEvery,
    Init,
    Lr,
    Milestones,
    Model,
    Momentum,
    Nesterov,
    Optim,
    Patience,
    Schedule,
    Seed,
    Steps,
    TensorBoard,
    Threads,
    ValSize,
    Warmup,
    WeightDecay,
    clean_errors,
    console,
    fmt,
    fmt_count,
    make_recipe,
    method_options,
    print_table,
    progress_bar,
)


# -- train ------------------------------------------------------------------------------------------
@app.command()
def train(
    model: Model = "lenet300",
    dataset: DatasetOpt = "fashion-mnist",
    steps: Steps = "20ep",
    batch_size: BatchSize = 60,
    lr: Lr = 0.1,
    optimizer: Optim = "sgd",
    momentum: Momentum = 0.0,
    nesterov: Nesterov = False,
    weight_decay: WeightDecay = 0.0,
    l2: L2 = 0.0,
    schedule: Schedule = "constant",
    milestones: Milestones = None,
    warmup: Warmup = "0it",
    eval_every: EvalEvery = "auto",
    seed: Seed = 0,
    init: Init = "kaiming_normal",
    val_size: ValSize = 5000,
    end_on_best: EndOnBest = False,
    patience: Patience = None,
    device: Device = "auto",
    threads: Threads = None,
    data_root: DataRoot = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Also write it as a run directory under this root (level 0 only), for load_ticket and export."
        ),
    ] = None,
) -> None:
    """Train one dense network and print its learning curve."""
    # long: one typer option per parameter, then the table it prints
    from ticketlab.api import train_dense
    from ticketlab.hardware.device import set_threads

    with clean_errors():
        set_threads(threads)
        recipe = make_recipe(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            l2=l2,
            schedule=schedule,
            milestones=milestones,
            warmup=warmup,
            eval_every=eval_every,
            patience=patience,
        )
        with progress_bar() as bar:
            task = bar.add_task("train", total=None, info="")

            def report(step: int, total: int, row: dict | None) -> None:
                info = f"val acc {row['val_acc']:.4f}" if row and row.get("val_acc") == row.get("val_acc") else ""
                bar.update(task, completed=step, total=total, **({"info": info} if info else {}))

            result = train_dense(
                model=model,
                dataset=dataset,
                recipe=recipe,
                seed=seed,
                init=init,
                val_size=val_size,
                end_on_best=end_on_best,
                device=device,
                data_root=data_root,
                progress=report,
                out=out,
            )
    print_table(
        f"{model} on {dataset}",
        ("step", "epoch", "train loss", "val loss", "val acc", "test acc"),
        [
            [
                str(row["step"]),
                f"{row['epoch']:.2f}",
                fmt(row["train_loss"]),
                fmt(row["val_loss"]),
                fmt(row["val_acc"]),
                fmt(row["test_acc"]),
            ]
            for row in result.history
        ],
    )
    epochs = max((result.stopped_step - result.start_step) / result.steps_per_epoch, 1e-9)
    console.print(
        f"final test acc [bold]{result.final['test_acc']:.4f}[/bold]; early-stop step {result.early_stop_step} "
        f"(test acc {fmt(result.early_stop.get('test_acc'))}); "
        f"{f'stopped early at step {result.stopped_step}; ' if result.stopped_step != result.end_step else ''}"
        f"{result.wall_time:.1f} s "
        f"({result.wall_time / epochs:.2f} s/epoch incl. evaluation)"
    )
    if out is not None:
        console.print(f"run directory: {result.path}")


# -- prune ------------------------------------------------------------------------------------------
@app.command()
def prune(
    model: Model = "lenet300",
    dataset: DatasetOpt = "fashion-mnist",
    method: Annotated[
        str,
        typer.Option(
            help="lottery, finetune, lr_rewind, late_rewind:<dur>, sgimp:<X%>, gimp, oneshot, multishot, iter_snip, force, edge_popup, gem_miner, supermask, tom, double_pruning, scored_pruning, or a criterion alone (snip, grasp, grasp_abs, synflow, magnitude, random, random_er, random_erk, prospr, ntk_sap, phew, ...: one shot at init; synflow: 100 rounds)."
            " Options: -o key=value, or in the criterion's name (prospr:steps=5); `ticketlab methods [NAME]` lists all."
        ),
    ] = "lottery",
    density: Annotated[
        list[float] | None, typer.Option(help="Target density (repeatable for upfront methods).")
    ] = None,
    sparsity: Annotated[
        float | None, typer.Option(help="Target sparsity = 1 - density (instead of --density).")
    ] = None,
    criterion: Annotated[
        str | None,
        typer.Option(help="Scoring criterion of the prune step (default: magnitude for iterative methods)."),
    ] = None,
    scope: Annotated[str, typer.Option(help="global or layerwise.")] = "global",
    k: Annotated[float, typer.Option("--K", "--k", help="Per-level keep fraction of iterative pruning.")] = 0.8,
    rounds: Annotated[
        int | None,
        typer.Option(
            help="Scoring rounds (upfront multi-shot, or per level = IMS); default: the method's (1; 100 for synflow)."
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Method option key=value (repeatable), e.g. -o regrow=0.1."),
    ] = None,
    control: Annotated[
        list[str] | None,
        typer.Option(
            help="Control on each ticket (repeatable): reinit, shuffle_weights, shuffle_mask, shuffle_mask_reinit, random_same_layer_density."
        ),
    ] = None,
    steps: Steps = "10ep",
    batch_size: BatchSize = 60,
    lr: Lr = 0.1,
    optimizer: Optim = "sgd",
    momentum: Momentum = 0.0,
    nesterov: Nesterov = False,
    weight_decay: WeightDecay = 0.0,
    l2: L2 = 0.0,
    schedule: Schedule = "constant",
    milestones: Milestones = None,
    warmup: Warmup = "0it",
    eval_every: EvalEvery = "auto",
    seed: Seed = 0,
    init: Init = "kaiming_normal",
    val_size: ValSize = 5000,
    end_on_best: EndOnBest = False,
    patience: Patience = None,
    out: Annotated[Path, typer.Option(help="Root folder of run directories.")] = Path("runs"),
    device: Device = "auto",
    threads: Threads = None,
    data_root: DataRoot = None,
    tensorboard: TensorBoard = False,
) -> None:
    """Find tickets with one method; write mask + weights per level and print a per-level table."""
    # long: one typer option per parameter (the spec's fields), then the run and its table
    from ticketlab.api import prune as api_prune
    from ticketlab.hardware.device import set_threads

    with clean_errors():
        set_threads(threads)
        if sparsity is not None:
            if density:
                raise CliError("give --density or --sparsity, not both")
            density = [1.0 - sparsity]
        recipe = make_recipe(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            l2=l2,
            schedule=schedule,
            milestones=milestones,
            warmup=warmup,
            eval_every=eval_every,
            patience=patience,
        )
        with progress_bar() as bar:
            task = bar.add_task("level 0", total=None, info="")
            state = {"levels": 0}

            def report(step: int, total: int, row: dict | None) -> None:
                bar.update(task, completed=step, total=total)

            def log(message: str) -> None:
                state["levels"] += 1
                bar.console.print(message, markup=False, highlight=False)
                bar.update(task, description=f"after {state['levels']} trainings")

            result = api_prune(
                model=model,
                dataset=dataset,
                method=method,
                density=tuple(density or (0.05,)),
                criterion=criterion,
                scope=scope,
                K=k,
                rounds=rounds,
                controls=tuple(control or ()),
                recipe=recipe,
                seed=seed,
                init=init,
                val_size=val_size,
                end_on_best=end_on_best,
                out=out,
                device=device,
                data_root=data_root,
                progress=report,
                log=log,
                options=method_options(option),
            )
    if tensorboard:
        from ticketlab.analysis.tensorboard import export_tensorboard

        export_tensorboard(result.path)
    _print_levels(result.table(), f"{method} · {model} · {dataset} · seed {seed}")
    from ticketlab.analysis.plots import plot_accuracy_vs_density

    png = plot_accuracy_vs_density(
        result.table(), result.path / "accuracy_vs_density.png", title=f"{method} on {model}/{dataset}"
    )
    console.print(f"run directory: {result.path}\nplot: {png}")


def _print_levels(frame, title: str) -> None:
    header = (
        "level",
        "control",
        "density",
        "sparsity",
        "test acc",
        "early-stop step",
        "winning",
        "collapsed",
        "time (s)",
    )
    print_table(
        title,
        header,
        [
            [
                str(row["level"]),
                row["control"] or "ticket",
                f"{row['density']:.4f}",
                f"{row['sparsity']:.4f}",
                fmt(row["test_acc"]),
                fmt_count(row["early_stop_step"]),
                fmt(row["winning"]),
                fmt(bool(row["collapsed"])),
                f"{row['train_time'] + row['score_time']:.1f}",
            ]
            for _, row in frame.iterrows()
        ],
    )


# -- run a spec file --------------------------------------------------------------------------------
@app.command()
def run(
    spec_file: Annotated[Path, typer.Argument(help="YAML spec of one experiment.")],
    out: Annotated[Path, typer.Option(help="Root folder of run directories.")] = Path("runs"),
    device: Device = "auto",
    threads: Threads = None,
    data_root: DataRoot = None,
    tensorboard: TensorBoard = False,
) -> None:
    """Run (or resume) the experiment a YAML spec describes."""
    from ticketlab.config.spec import load_spec
    from ticketlab.experiment.run import run_experiment
    from ticketlab.hardware.device import set_threads

    with clean_errors():
        set_threads(threads)
        spec = load_spec(spec_file)
        with progress_bar() as bar:
            task = bar.add_task("training", total=None, info="")

            def show(message: str) -> None:
                bar.console.print(message, markup=False, highlight=False)

            result = run_experiment(
                spec,
                out,
                device=device,
                data_root=data_root,
                progress=lambda step, total, row: bar.update(task, completed=step, total=total),
                log=_tensorboard_log(out / spec.run_id(), show) if tensorboard else show,
            )
    _print_levels(result.table(), f"{spec.method.name} · {spec.model} · {spec.dataset} · seed {spec.seed}")
    console.print(f"run directory: {result.path}")


def _tensorboard_log(run_path: Path, log: Any) -> Any:
    from ticketlab.analysis.tensorboard import tensorboard_log

    return tensorboard_log(run_path, log)


# -- data -------------------------------------------------------------------------------------------
@data_app.command("list")
def data_list() -> None:
    """Show which datasets are available, and where."""
    from ticketlab.data import dataset_status

    print_table(
        "datasets",
        ("dataset", "found", "where", "source"),
        [
            [row["name"], "yes" if row["found"] else "no", str(row.get("where") or "-"), str(row.get("source") or "-")]
            for row in dataset_status()
        ],
    )


def _register_commands() -> None:
    """Commands living in ``ticketlab.cli.<name>`` add themselves with ``register(app)``."""
    import importlib
    import pkgutil

    from ticketlab import cli

    for module in pkgutil.iter_modules(cli.__path__):
        if module.name not in ("__main__", "app", "common"):
            importlib.import_module(f"ticketlab.cli.{module.name}").register(app)


_register_commands()


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
