"""``ticketlab meta build`` / ``ticketlab meta fit``: meta-learned scores (000 §3.2, §5.2, appendix B).

``build`` runs (or reuses) the reference ticket and writes the per-weight feature table; ``fit`` fits the
five regressors and prints R² and MSE on train and held-out rows like 000's tables 5.1-5.3. A fitted
model prunes as ``--criterion meta:<models dir>/<name>.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ticketlab.cli.common import DEFAULT_STEPS, RegistryHelp

meta_app = typer.Typer(no_args_is_help=True, help="Meta-learned scores: build the per-weight table, fit regressors.")


def register(app: typer.Typer) -> None:
    app.add_typer(meta_app, name="meta")


@meta_app.command("build", cls=RegistryHelp)
def build(
    model: Annotated[str, typer.Option(help="Model: {models}.")] = "lenet300",
    dataset: Annotated[str, typer.Option(help="mnist, fashion-mnist, cifar10 or synthetic.")] = "fashion-mnist",
    density: Annotated[float, typer.Option(help="Density of the reference ticket (000 used 0.005).")] = 0.01,
    out: Annotated[Path, typer.Option(help="Table file: .parquet, .csv or .csv.gz.")] = Path("meta_table.parquet"),
    seed: Annotated[
        list[int] | None, typer.Option(help="Seed of initialisation (repeatable: one reference per seed).")
    ] = None,
    target: Annotated[
        str, typer.Option(help="scores (the reference's last scores, per-layer [0, 1]) or mask (0/1).")
    ] = "scores",
    extended: Annotated[bool, typer.Option("--extended", help="Add the six features of 000 appendix B.")] = False,
    ranks: Annotated[bool, typer.Option("--ranks", help="Add per-layer ranks of each score (000 §5.2.1).")] = False,
    criteria: Annotated[
        list[str] | None,
        typer.Option(
            "--criterion", help="Score feature (repeatable; default magnitude, snip, grasp, synflow): {criteria}."
        ),
    ] = None,
    reference: Annotated[
        str,
        typer.Option(
            help="Reference method (default: lottery = IMP schedule, i.e. IMS with --reference-criterion synflow)."
        ),
    ] = "lottery",
    reference_criterion: Annotated[
        str | None, typer.Option(help="Criterion of the reference's prune step.")
    ] = "synflow",
    rounds: Annotated[
        int, typer.Option(help="Scoring rounds of the reference (per level for iterative methods).")
    ] = 10,
    k: Annotated[float, typer.Option("--K", "--k", help="Per-level keep fraction of an iterative reference.")] = 0.8,
    steps: Annotated[
        str, typer.Option(help="Training length of the reference ('20ep', '1500it'), per level.")
    ] = DEFAULT_STEPS,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 60,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.1,
    init: Annotated[
        str, typer.Option(help="Initialisation: {inits}; or saw:<criterion> (scores as weights).")
    ] = "kaiming_normal",
    val_size: Annotated[int, typer.Option(help="Examples held out from the training set for validation.")] = 5000,
    runs: Annotated[Path, typer.Option(help="Root folder of run directories (the reference runs live there).")] = Path(
        "runs"
    ),
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or auto.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Folder holding the dataset files.")] = None,
) -> None:
    """Run the reference ticket per seed, then tabulate features at initialisation against its target."""
    # long: one typer option per parameter
    from ticketlab.cli.common import clean_errors, console, progress_bar
    from ticketlab.config.recipe import Recipe
    from ticketlab.config.spec import MethodSpec
    from ticketlab.criteria import parse
    from ticketlab.criteria.features import SCORE_CRITERIA, FeatureSpec
    from ticketlab.hardware.device import set_threads
    from ticketlab.metalearn.table import build_table, save_table

    with clean_errors():
        set_threads(threads)
        features = FeatureSpec(tuple(criteria) if criteria else SCORE_CRITERIA, ranks=ranks, extended=extended)
        for name in features.criteria:
            parse(name)
        method = MethodSpec(name=reference, criterion=reference_criterion, rounds=rounds, K=k)
        recipe = Recipe(steps=steps, batch_size=batch_size, lr=lr)
        with progress_bar() as bar:
            task = bar.add_task("reference", total=None, info="")
            frame = build_table(
                model,
                dataset,
                density,
                seeds=tuple(seed or (0,)),
                reference=method,
                recipe=recipe,
                target=target,
                features=features,
                init=init,
                val_size=val_size,
                root=runs,
                device=device,
                data_root=data_root,
                progress=lambda step, total, row: bar.update(task, completed=step, total=total),
                log=lambda message: bar.console.print(message, markup=False, highlight=False),
            )  # type: ignore[arg-type]
        path = save_table(frame, out)
    meta = frame.attrs["ticketlab"]
    for r in meta["runs"]:
        console.print(
            f"reference seed {r['seed']}: {r['run']} level {r['level']}, density {r['density']:.4f}, test acc {r['test_acc']:.4f}"
        )
    console.print(
        f"{path}: {len(frame)} rows, features {', '.join(meta['features'])}; target {target} "
        f"(mean {frame['target'].mean():.4g}, var {frame['target'].var():.4g})"
    )


@meta_app.command("fit")
def fit(
    table: Annotated[Path, typer.Argument(help="Table written by `ticketlab meta build`.")],
    out: Annotated[Path, typer.Option(help="Folder for the fitted models (<name>.json + model file).")] = Path(
        "meta_models"
    ),
    features: Annotated[
        str,
        typer.Option(help="base (scores, and ranks if built), extended (000 appendix B), or comma-separated columns."),
    ] = "base",
    models: Annotated[
        str, typer.Option(help="Comma-separated regressors: linear, sgd, tree, forest, mlp.")
    ] = "linear,sgd,tree,forest,mlp",
    test_size: Annotated[float, typer.Option(help="Held-out fraction of rows.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split, the SGD/tree/forest randomness and the MLP.")] = 0,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="Regressor argument model.key=value (repeatable), e.g. -p forest.n_estimators=100 -p mlp.epochs=20.",
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
) -> None:
    """Fit the regressors; print R² and MSE on train and held-out rows (000 tables 5.1-5.3)."""
    # long: one typer option per parameter
    from rich.table import Table

    from ticketlab.cli.common import CliError, clean_errors, console
    from ticketlab.config.keyvalue import parse_key_value
    from ticketlab.hardware.device import set_threads
    from ticketlab.metalearn.fit import fit_models
    from ticketlab.metalearn.table import load_table

    with clean_errors():
        set_threads(threads)
        params: dict[str, dict] = {}
        for pair in param or ():
            form, example = "model.key=value", "forest.n_estimators=100"
            key, value = parse_key_value(pair, "--param", example, form)
            name, dot, arg = key.partition(".")
            if not (dot and name and arg):
                raise CliError(f"--param takes {form}, e.g. --param {example}; got {pair!r}")
            params.setdefault(name, {})[arg] = value
        frame = load_table(table)
        cols = features if features in ("base", "extended") else [c.strip() for c in features.split(",") if c.strip()]
        with console.status("fitting"):
            result, _ = fit_models(
                frame,
                out,
                features=cols,
                models=[m.strip() for m in models.split(",") if m.strip()],
                test_size=test_size,
                seed=seed,
                params=params,
                log=lambda message: console.print(message, markup=False, highlight=False),
            )
    meta = frame.attrs.get("ticketlab", {})
    title = f"{table.name}: target {meta.get('target', '?')}, {len(frame)} rows, features {features}"
    view = Table(title=title)
    for col in ("model", "R² (train)", "R² (held-out)", "MSE (train)", "MSE (held-out)", "fit (s)"):
        view.add_column(col, justify="left" if col == "model" else "right")
    for _, row in result.iterrows():
        view.add_row(
            row["model"],
            f"{row['r2_train']:.6f}",
            f"{row['r2_test']:.6f}",
            f"{row['mse_train']:.6g}",
            f"{row['mse_test']:.6g}",
            f"{row['fit_time']:.1f}",
        )
    console.print(view)
    for _, row in result.iterrows():
        console.print(f"criterion: meta:{row['path']}", markup=False, highlight=False)
