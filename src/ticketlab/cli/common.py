"""What every ``ticketlab`` command shares: the consoles, the option types, turning a user's mistake into
one clear line (exit code 2), progress bars and number formatting."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

if TYPE_CHECKING:
    from ticketlab.config.recipe import Recipe

console = Console()
err = Console(stderr=True)

# -- shared options ---------------------------------------------------------------------------------
Model = Annotated[
    str,
    typer.Option(help="Model: {models} (mlp takes its sizes, mlp:784-300-100-10; `ticketlab models` describes each)."),
]
DatasetOpt = Annotated[str, typer.Option("--dataset", help="mnist, fashion-mnist, cifar10 or synthetic.")]
DEFAULT_STEPS = "20ep"  # the Recipe's default length (tested equal): one default everywhere
Steps = Annotated[
    str, typer.Option(help="Training length per level: '20ep' (epochs) or '1500it' (steps); the unit is required.")
]
BatchSize = Annotated[int, typer.Option(help="Batch size.")]
Lr = Annotated[float, typer.Option(help="Learning rate.")]
Optim = Annotated[str, typer.Option(help="sgd or adam.")]
Momentum = Annotated[float, typer.Option(help="SGD momentum.")]
Nesterov = Annotated[bool, typer.Option(help="Nesterov momentum (SGD).")]
WeightDecay = Annotated[float, typer.Option(help="Weight decay (added to the gradient).")]
L2 = Annotated[float, typer.Option(help="L2 penalty l2*||w||^2 added to the loss.")]
Schedule = Annotated[str, typer.Option(help="LR schedule: constant, multistep or cosine.")]
Milestones = Annotated[
    list[str] | None, typer.Option("--milestone", help="Multistep milestone (repeatable), e.g. 80ep.")
]
Warmup = Annotated[str, typer.Option(help="Linear LR warm-up length, e.g. 200it.")]
EvalEvery = Annotated[
    str,
    typer.Option(
        help="Evaluate every this long, e.g. 1ep or 100it; auto: at least 10 times per training and once per epoch."
    ),
]
Seed = Annotated[int, typer.Option(help="Seed of initialisation and data order.")]
Init = Annotated[
    str,
    typer.Option(
        help="Initialisation: {inits}; or saw:<criterion>, the criterion's scores as the initial weights (e.g. saw:snip)."
    ),
]
ValSize = Annotated[int, typer.Option(help="Examples held out from the training set for validation.")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or auto.")]
Threads = Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's or $TICKETLAB_THREADS).")]
DataRoot = Annotated[Path | None, typer.Option(help="Folder holding the dataset files (else the usual lookup).")]
EndOnBest = Annotated[bool, typer.Option(help="End on the weights of minimum validation loss (003's early stopping).")]
Patience = Annotated[
    int | None,
    typer.Option(
        help="Early stopping: end training once the validation loss has not improved for this many evaluations (--eval-every); off by default."
    ),
]
TensorBoard = Annotated[
    bool, typer.Option("--tensorboard", help="Write TensorBoard curves under the run directory (<run>/tensorboard).")
]


# spec fields -> the flags that set them (clean_errors(flags=...)): a problem is said with what was typed
RECIPE_FLAGS = {
    "steps": "--steps",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "optimizer": "--optimizer",
    "momentum": "--momentum",
    "nesterov": "--nesterov",
    "weight_decay": "--weight-decay",
    "l2": "--l2",
    "lr_schedule": "--schedule",
    "milestones": "--milestone",
    "warmup": "--warmup",
    "eval_every": "--eval-every",
    "patience": "--patience",
    "early_stop": "--patience",
}
RUN_FLAGS = {
    **RECIPE_FLAGS,
    "model": "--model",
    "dataset": "--dataset",
    "init": "--init",
    "seed": "--seed",
    "val_size": "--val-size",
    "end_on_best": "--end-on-best",
    "device": "--device",
}
PRUNE_FLAGS = {
    **RUN_FLAGS,
    "densities": "--density",
    "controls": "--control",
    "method": "--method",
    "name": "--method",
    "method.name": "--method",
    "method.criterion": "--criterion",
    "criterion": "--criterion",
    "scope": "--scope",
    "K": "--K",
    "rounds": "--rounds",
    "method.options": "-o",
}


class RegistryHelp(TyperCommand):
    """A command whose help fills ``{methods}``, ``{criteria}``, ``{inits}``, ``{controls}`` and ``{models}`` in
    its options' help from the registries when the help is shown: every name is listed (a plugin's too), and
    the registries (torch) are imported only then."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        names = registry_names()
        for param in self.params:
            text = getattr(param, "help", None)
            if text and "{" in text:
                for key, value in names.items():
                    text = text.replace(f"{{{key}}}", value)
                param.help = text  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


def registry_names() -> dict[str, str]:
    """The registered names, as the option help lists them."""
    from ticketlab.criteria import CRITERIA
    from ticketlab.methods import CONTROLS, METHODS
    from ticketlab.models import INITS, MODELS

    return {
        "methods": ", ".join(METHODS.names()),
        "criteria": ", ".join(CRITERIA.names()),
        "inits": ", ".join(INITS.names()),
        "controls": ", ".join(CONTROLS.names()),
        "models": ", ".join(MODELS.names()),
    }


class CliError(Exception):
    """A mistake in the command line that no lower layer can see (e.g. two flags that exclude each other)."""


@contextmanager
def clean_errors(flags: dict[str, str] | None = None) -> Iterator[None]:
    """Turn a user's mistake into one clear line per problem (``error: ...``) and exit code 2; bugs keep
    their traceback. ``flags`` maps spec fields to the command's flags (``{"densities": "--density"}``), so a
    problem with a value given on the command line names the flag that gave it."""
    from ticketlab.config import EarlyStop, ExperimentSpec, MethodSpec, Recipe
    from ticketlab.config.problems import problem
    from ticketlab.data import DownloadError
    from ticketlab.files import CorruptFileError

    roots = {cls.__name__: cls for cls in (ExperimentSpec, MethodSpec, Recipe, EarlyStop)}
    try:
        yield
    except ValidationError as exc:
        for error in exc.errors():
            _error(in_flags(problem(error, roots.get(exc.title)), flags))
        raise typer.Exit(2) from None
    except (ValueError, FileNotFoundError, CorruptFileError, DownloadError, CliError) as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            _error(in_flags(line, flags))
        raise typer.Exit(2) from None


def in_flags(line: str, flags: dict[str, str] | None) -> str:
    """``method.options.regrow_every: ...`` -> ``-o regrow_every=...: ...`` and ``densities: ...`` ->
    ``--density: ...`` where ``flags`` knows the field: a problem said with what the user typed."""
    if not flags:
        return line
    field, sep, rest = line.partition(": ")
    if sep and " " not in field:
        if field.startswith("method.options.") and "method.options" in flags:
            field = f"{flags['method.options']} {field.removeprefix('method.options.')}=..."
        else:
            field = next((flags[k] for k in (field, field.rpartition(".")[2]) if k in flags), field)
        line = f"{field}: {rest}"
    if "method.options" in flags:  # "set method.options.regrow_every" inside a message
        line = re.sub(r"\bmethod\.options\.(\w+)", lambda m: f"{flags['method.options']} {m.group(1)}=...", line)
    return line


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
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: ``-`` for None or NaN, yes/no for booleans, floats to ``digits`` decimals, integers whole."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's, without importing numpy
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_count(value: Any) -> str:
    """A step or count cell: whole numbers without decimals (``916``, not ``916.0000``; pandas keeps a column
    with a missing value as floats), a mean of them to one decimal, ``-`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.1f}"


# -- tables -----------------------------------------------------------------------------------------
_FOLD = 8  # the narrowest a text column is folded to on a narrow terminal
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?$|^-$")


def is_number(cell: str) -> bool:
    """Whether a formatted cell is a number (or ``-``, a missing one): such columns align right and are never
    broken."""
    return bool(_NUMBER.match(cell))


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], out: Console | None = None) -> None:
    """Print formatted cells as a table without ever cutting one to ``…``.

    Not on a terminal (a pipe, a file), the table is printed at its full width: every cell whole on one line.
    On a terminal narrower than that, text and headers wrap (:func:`column_widths`) while every number stays
    on one line; if even that does not fit, the table is printed wider than the terminal (which wraps its
    lines) rather than losing digits.
    """
    out = out or console
    numeric = [bool(rows) and all(is_number(row[j]) for row in rows) for j in range(len(header))]
    table = Table(title=Text(title))
    for j, name in enumerate(header):
        table.add_column(Text(name), justify="right" if numeric[j] else "left", overflow="fold")
    for row in rows:
        table.add_row(*map(Text, row))  # plain text: a label's "[reinit]" is no markup
    natural = [max(cell_len(cell) for cell in [name, *(row[j] for row in rows)]) for j, name in enumerate(header)]
    frame = Measurement.get(out, out.options.update_width(1 << 20), table).maximum - sum(natural)  # borders, padding
    width = max(sum(natural) + frame, cell_len(title))  # the title on one line too
    if out.is_terminal and width > out.width:
        widths = column_widths(header, rows, numeric, out.width - frame)
        for column, w in zip(table.columns, widths):
            column.width = w
        width = max(out.width, sum(widths) + frame)
    previous = out.width
    out.width = width
    try:
        out.print(table, crop=False)
    finally:
        out.width = previous


def column_widths(
    header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool], budget: int
) -> list[int]:
    """Column widths that fit ``budget`` characters if they can: from each column's natural width (all on one
    line), the widest column above its floor gives a character until the sum fits. The floors come in three
    steps: headers of numbers wrap at their spaces (a header costs one line, a row's text one line per row);
    then text folds down to :data:`_FOLD` characters a line; then headers of numbers fold too. A number is
    never split: its column is never narrower than it."""
    natural = [max(cell_len(cell) for cell in [name, *(row[j] for row in rows)]) for j, name in enumerate(header)]
    widest = [max((cell_len(row[j]) for row in rows), default=1) for j in range(len(header))]
    words = [max(cell_len(word) for word in name.split() or [""]) for name in header]
    widths = list(natural)
    for floors in (
        [max(widest[j], words[j]) if numeric[j] else natural[j] for j in range(len(header))],
        [max(widest[j], words[j]) if numeric[j] else min(natural[j], _FOLD) for j in range(len(header))],
        [widest[j] if numeric[j] else min(natural[j], _FOLD) for j in range(len(header))],
    ):
        while sum(widths) > budget:
            slack = [w - max(f, 1) for w, f in zip(widths, floors)]
            j = max(range(len(widths)), key=lambda k: (slack[k], widths[k]))
            if slack[j] <= 0:
                break
            widths[j] -= 1
    return widths
