"""What every ``ticketlab`` command shares: the consoles, the option types, turning a user's mistake into
one clear line (exit code 2), progress bars and number formatting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from ticketlab.config.recipe import Recipe

console = Console()
err = Console(stderr=True)

# -- shared options ---------------------------------------------------------------------------------
Model = Annotated[str, typer.Option(help="Model name, e.g. lenet300, mlp:784-400-400-400-10, resnet20.")]
DatasetOpt = Annotated[str, typer.Option("--dataset", help="mnist, fashion-mnist, cifar10 or synthetic.")]
Steps = Annotated[str, typer.Option(help="Training length: '20ep' (epochs) or '1500it' (steps).")]
BatchSize = Annotated[int, typer.Option(help="Batch size.")]
Lr = Annotated[float, typer.Option(help="Learning rate.")]
Optim = Annotated[str, typer.Option(help="sgd or adam.")]
Momentum = Annotated[float, typer.Option(help="SGD momentum.")]
Nesterov = Annotated[bool, typer.Option(help="Nesterov momentum (SGD).")]
WeightDecay = Annotated[float, typer.Option(help="Weight decay (added to the gradient).")]
L2 = Annotated[float, typer.Option(help="L2 penalty l2*||w||^2 added to the loss.")]
Schedule = Annotated[str, typer.Option(help="LR schedule: constant, multistep or cosine.")]
Milestones = Annotated[Optional[list[str]], typer.Option("--milestone", help="Multistep milestone (repeatable), e.g. 80ep.")]
Warmup = Annotated[str, typer.Option(help="Linear LR warm-up length, e.g. 200it.")]
EvalEvery = Annotated[str, typer.Option(help="Evaluate every this long, e.g. 1ep.")]
Seed = Annotated[int, typer.Option(help="Seed of initialisation and data order.")]
Init = Annotated[str, typer.Option(help="Initialisation: kaiming_normal, xavier, signed_constant.")]
ValSize = Annotated[int, typer.Option(help="Examples held out from the training set for validation.")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or auto.")]
Threads = Annotated[Optional[int], typer.Option(help="CPU threads for torch (default: torch's or $TICKETLAB_THREADS).")]
DataRoot = Annotated[Optional[Path], typer.Option(help="Folder holding the dataset files (else the usual lookup).")]
EndOnBest = Annotated[bool, typer.Option(help="End on the weights of minimum validation loss (003's early stopping).")]
Patience = Annotated[Optional[int], typer.Option(help="Early stopping: end training once the validation loss has not improved for this many evaluations (--eval-every); off by default.")]
TensorBoard = Annotated[bool, typer.Option("--tensorboard", help="Write TensorBoard curves under the run directory (<run>/tensorboard).")]


class CliError(Exception):
    """A mistake in the command line that no lower layer can see (e.g. two flags that exclude each other)."""


@contextmanager
def clean_errors() -> Iterator[None]:
    """Turn a user's mistake into one clear line per problem (``error: ...``) and exit code 2; bugs keep
    their traceback."""
    from ticketlab.data import DownloadError
    from ticketlab.files import CorruptFileError

    try:
        yield
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "spec"
            _error(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        raise typer.Exit(2) from None
    except (ValueError, FileNotFoundError, CorruptFileError, DownloadError, CliError) as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            _error(line)
        raise typer.Exit(2) from None


def _error(line: str) -> None:
    err.print(f"error: {line}", style="red", highlight=False, markup=False, soft_wrap=True)


def make_recipe(**kw: Any) -> Recipe:
    """The recipe of the training flags (``schedule`` is the recipe's ``lr_schedule``)."""
    from ticketlab.config.recipe import Recipe

    kw["milestones"] = tuple(kw.pop("milestones") or ())
    kw["lr_schedule"] = kw.pop("schedule")
    patience = kw.pop("patience", None)
    if patience is not None:
        kw["early_stop"] = {"patience": patience}
    return Recipe(**kw)


def method_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--option`` pairs: ``["regrow=0.1", "thresholds=[0.1, 0.2]"]`` -> ``{"regrow": 0.1, "thresholds": [0.1, 0.2]}``."""
    from ticketlab.config.keyvalue import parse_key_value

    return dict(parse_key_value(pair, "--option", "regrow=0.1") for pair in pairs or ())


def progress_bar() -> Progress:
    """The bar every long command shows (description, done/total, an info field, elapsed and remaining)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
    )


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: ``-`` for None, yes/no for booleans, floats to ``digits`` decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


