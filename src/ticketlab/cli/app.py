"""The ``ticketlab`` command: a thin layer that parses flags, calls the API and prints tables."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find, train and study lottery tickets.")

from ticketlab.cli.common import (  # noqa: E402
    DEFAULT_STEPS,
    L2,
    PRUNE_FLAGS,
    RUN_FLAGS,
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
    RegistryHelp,
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
    make_recipe,
    method_options,
    print_table,
    progress_bar,
)


def _version(value: bool) -> None:
    if value:
        from ticketlab import __version__

        console.print(f"ticketlab {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            help="Import this module (a name, or the path of a .py file) first: its registrations (datasets, "
            "models, criteria, methods) become usable by name, in sweep workers too. Repeatable; before the command.",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """Find, train and study lottery tickets."""
    from ticketlab.plugins import load_plugins

    with clean_errors():
        load_plugins(plugin or ())


# -- train ------------------------------------------------------------------------------------------
@app.command(cls=RegistryHelp)
def train(
    model: Model = "lenet300",
    dataset: DatasetOpt = "fashion-mnist",
    steps: Steps = DEFAULT_STEPS,
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

    with clean_errors(RUN_FLAGS):
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
@app.command(cls=RegistryHelp)
def prune(
    model: Model = "lenet300",
    dataset: DatasetOpt = "fashion-mnist",
    method: Annotated[
        str,
        typer.Option(
            help="Method: {methods} (late_rewind:<duration>, sgimp:<X%>); or a criterion, pruned at "
            "initialisation (one shot; synflow in 100 rounds). Options: -o key=value, or in the criterion's name "
            "(prospr:steps=5); `ticketlab methods [NAME]` lists all."
        ),
    ] = "lottery",
    density: Annotated[
        list[float] | None,
        typer.Option(
            help="Target density, the fraction of weights kept (repeatable: each is a level); this or --sparsity "
            "is required."
        ),
    ] = None,
    sparsity: Annotated[
        list[float] | None,
        typer.Option(help="Target sparsity = 1 - density, instead of --density (repeatable)."),
    ] = None,
    criterion: Annotated[
        str | None,
        typer.Option(
            help="Scoring criterion of the prune step: {criteria}; stacked(A,B) combines two; meta:<model.json> a "
            "fitted meta model (default: magnitude for iterative methods)."
        ),
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
        typer.Option(help="Control on each ticket (repeatable): {controls}."),
    ] = None,
    steps: Steps = DEFAULT_STEPS,
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
    from ticketlab.cli.live import plot_levels, print_levels, run_display
    from ticketlab.config.spec import sparsity_to_density
    from ticketlab.hardware.device import set_threads

    with clean_errors(PRUNE_FLAGS):
        set_threads(threads)
        options = method_options(option)
        if not density and not sparsity:
            raise CliError(
                "--density: give the target, e.g. --density 0.05 (the fraction of weights kept; iterative methods "
                "prune by --K per level down to it) or --sparsity 0.95"
            )
        if sparsity:
            if density:
                raise CliError("--density and --sparsity: give one of them (sparsity = 1 - density), not both")
            for s in sparsity:
                if not 0 <= s < 1:
                    raise CliError(f"--sparsity: {s} is not in [0, 1) (sparsity = fraction of weights pruned)")
            density = [sparsity_to_density(s) for s in sparsity]
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
        with run_display() as (status, log):
            result = api_prune(
                model=model,
                dataset=dataset,
                method=method,
                density=tuple(density),
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
                log=log,
                status=status,
                options=options,
            )
    if tensorboard:
        from ticketlab.analysis.tensorboard import export_tensorboard

        export_tensorboard(result.path)
    print_levels(result.table(), f"{method} · {model} · {dataset} · seed {seed}")
    plot_levels(result, f"{method} on {model}/{dataset}")


# -- run a spec file --------------------------------------------------------------------------------
@app.command()
def run(
    spec_file: Annotated[Path, typer.Argument(help="YAML spec of one experiment.")],
    out: Annotated[Path, typer.Option(help="Root folder of run directories.")] = Path("runs"),
    device: Device = "auto",
    threads: Threads = None,
    data_root: DataRoot = None,
    tensorboard: TensorBoard = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a spec field: key=value, dotted path, YAML value (repeatable), e.g. --set recipe.steps=1ep.",
        ),
    ] = None,
) -> None:
    """Run (or resume) the experiment a YAML spec describes."""
    from ticketlab.cli.live import plot_levels, print_levels, run_display
    from ticketlab.config.spec import load_spec
    from ticketlab.experiment.check import check_spec
    from ticketlab.experiment.run import run_experiment
    from ticketlab.hardware.device import set_threads

    with clean_errors():
        set_threads(threads)
        spec = load_spec(spec_file, set_ or ())
        try:  # names checked before anything is written: a wrong one is a mistake in the file
            check_spec(spec)
        except ValueError as exc:
            raise CliError(f"{spec_file}: {exc}") from None
        with run_display() as (status, show):
            result = run_experiment(
                spec,
                out,
                device=device,
                data_root=data_root,
                status=status,
                log=_tensorboard_log(out / spec.run_id(), show) if tensorboard else show,
            )
    print_levels(result.table(), f"{spec.method.name} · {spec.model} · {spec.dataset} · seed {spec.seed}")
    plot_levels(result, f"{spec.method.name} on {spec.model}/{spec.dataset}")


def _tensorboard_log(run_path: Path, log: Any) -> Any:
    from ticketlab.analysis.tensorboard import tensorboard_log

    return tensorboard_log(run_path, log)


def _register_commands() -> None:
    """Commands living in ``ticketlab.cli.<name>`` add themselves with ``register(app)``."""
    import importlib
    import pkgutil

    from ticketlab import cli

    for module in pkgutil.iter_modules(cli.__path__):
        if module.name not in ("__main__", "app", "common", "live"):
            importlib.import_module(f"ticketlab.cli.{module.name}").register(app)


_register_commands()


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
