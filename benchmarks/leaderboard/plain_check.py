"""Retrain a found ticket with fresh code: its mask and starting weights in a plain PyTorch loop written here
(no ticketlab trainer), its test accuracy beside the one the run recorded (issue 22, item 4's rule: a result
counts only when the found mask gives the same accuracy in a plain loop).

    python benchmarks/leaderboard/plain_check.py runs/leaderboard/lenet300/<run id> --level 1
    python benchmarks/leaderboard/plain_check.py runs/leaderboard/lenet300 --density 0.005   # every run there

ticketlab is used only to read the run's files (``ticketlab.load_ticket``: mask, starting weights, spec,
standardisation). What is written here: the network for MLPs (``nn.Sequential`` of ``nn.Linear`` + ReLU
built from the stored weight shapes; other models reuse the stored module's architecture, re-initialised
from the stored starting weights), the data for Fashion-MNIST/MNIST without a validation split (the idx
files read with gzip + numpy, standardised with the run's recorded mean and std; other datasets and splits
come from ``ticketlab.data.load_dataset``), and the loop: ``torch.optim.SGD`` (or Adam) at the recipe's
constant learning rate, a fresh random order per epoch from its own generator, cross-entropy, the mask
applied to the gradients before and to the weights after every step. The data order differs from the run's,
so the two accuracies agree to within seed noise, not bit for bit. A level whose ticket was not trained
(edge-popup's untrained supermask) is only evaluated.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.tickets import load_ticket

torch.set_num_threads(1)  # one core: the machine runs sweeps beside it

IDX = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}  # fmt: skip
ROOTS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format): magic (2 zero bytes, type, rank), big-endian sizes, then the data."""
    raw = gzip.decompress(path.read_bytes())
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


def plain_data(ticket, root: str | None):
    """(x_train, y_train, x_test, y_test) standardised with the run's recorded statistics."""
    spec = ticket.spec
    folder = Path(root or ROOTS.get(spec.dataset, "/nonexistent"))
    mean = torch.tensor(ticket.mean).view(1, -1, 1, 1)
    std = torch.tensor(ticket.std).view(1, -1, 1, 1)
    if spec.val_size == 0 and all((folder / f).exists() for pair in IDX.values() for f in pair):
        out = []
        for split in ("train", "test"):
            images, labels = (read_idx(folder / f) for f in IDX[split])
            x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
            out += [(x - mean) / std, torch.from_numpy(labels.astype(np.int64))]
        return tuple(out)
    from ticketlab.data import load_dataset  # read only: the same split and standardisation as the run

    data = load_dataset(spec.dataset, root=root, val_size=spec.val_size, seed=spec.split_seed)
    return data.x_train, data.y_train, data.x_test, data.y_test


def plain_model(ticket) -> nn.Module:
    """An MLP written out from the stored weight shapes; other models: the stored module's architecture."""
    start = ticket.start
    names = [k[: -len(".weight")] for k in start if k.endswith(".weight")]
    if all(start[f"{n}.weight"].dim() == 2 for n in names) and not any("running_mean" in k for k in start):
        layers: list[nn.Module] = [nn.Flatten()]
        for i, n in enumerate(names):
            w = start[f"{n}.weight"]
            layers.append(nn.Linear(w.shape[1], w.shape[0], bias=f"{n}.bias" in start))
            if i < len(names) - 1:
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers)
        linears = [m for m in model if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for n, lin in zip(names, linears):
                lin.weight.copy_(start[f"{n}.weight"])
                if lin.bias is not None:
                    lin.bias.copy_(start[f"{n}.bias"])
        model.masks = {lin.weight: ticket.mask[f"{n}.weight"].to(torch.float32) for n, lin in zip(names, linears)}
        return model
    import copy

    model = copy.deepcopy(ticket.model)
    model.load_state_dict(start)
    params = dict(model.named_parameters())
    model.masks = {params[n]: m.to(torch.float32) for n, m in ticket.mask.items()}
    return model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    with torch.no_grad():
        right = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    return right / len(x)


def train_plain(ticket, data, seed: int = 0) -> tuple[float, nn.Module]:
    """Train the ticket's mask from its starting weights with the run's recipe: (test accuracy, model)."""
    recipe = ticket.spec.recipe
    if recipe.lr_schedule != "constant" or recipe.warmup.amount or recipe.l2:
        raise ValueError("recipe: the plain loop does constant learning rates without warm-up or l2 only")
    x_train, y_train, x_test, y_test = data
    model = plain_model(ticket)
    trained = ticket.metrics.get("end_step", 1) != 0
    if trained:
        n = len(x_train)
        per_epoch = -(-n // recipe.batch_size)  # ceil: a last short batch per epoch
        total = recipe.steps.steps(per_epoch)
        if recipe.optimizer == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                  nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)  # fmt: skip
        else:
            opt = torch.optim.Adam(
                model.parameters(), lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay
            )
        g = torch.Generator().manual_seed(seed)
        step = 0
        while step < total:
            order = torch.randperm(n, generator=g)
            for i in range(0, n, recipe.batch_size):
                if step == total:
                    break
                model.train()
                idx = order[i : i + recipe.batch_size]
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                with torch.no_grad():
                    for p, m in model.masks.items():
                        p.grad.mul_(m)
                opt.step()
                with torch.no_grad():
                    for p, m in model.masks.items():
                        p.mul_(m)
                step += 1
    else:
        with torch.no_grad():
            for p, m in model.masks.items():
                p.mul_(m)
    return accuracy(model, x_test, y_test), model


def tickets_under(path: Path, density: float | None) -> list[tuple[Path, int]]:
    """(run, level) of every finished pruned level (no controls) under ``path``, or of ``path`` itself."""
    runs = [path] if (path / "spec.json").exists() else sorted(p.parent for p in path.glob("*/spec.json"))
    out = []
    for run in runs:
        for metrics in sorted(run.glob("level_*/metrics.json")):
            m = json.loads(metrics.read_text())
            d = m.get("target_density") or m.get("density")
            if d is not None and d < 1 and (density is None or abs(d - density) <= 1e-9 + 1e-3 * density):
                out.append((run, int(m["level"])))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a run directory, or a folder of runs")
    parser.add_argument("--level", type=int, default=None, help="level of a single run (default: every pruned one)")
    parser.add_argument("--control", default=None, help="a control of that level instead of the ticket")
    parser.add_argument("--density", type=float, default=None, help="only levels at this target density")
    parser.add_argument("--seed", type=int, default=0, help="seed of the plain loop's data order")
    parser.add_argument("--data-root", default=None, help="folder of the dataset's idx files")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    path = Path(args.path)
    if args.level is not None:
        if not (path / "spec.json").exists():
            print(f"error: path: --level needs a run directory, {path} has no spec.json", file=sys.stderr)
            return 2
        todo = [(path, args.level)]
    else:
        todo = tickets_under(path, args.density)
    if not todo:
        print(f"error: path: no finished pruned level under {path}", file=sys.stderr)
        return 2
    rows, cache = [], {}
    print("run          level control  density  recorded  plain    diff (points)")
    for run, level in todo:
        ticket = load_ticket(run, level=level, control=args.control)
        key = (ticket.spec.dataset, ticket.spec.val_size, ticket.spec.split_seed, ticket.mean, ticket.std)
        if key not in cache:
            cache[key] = plain_data(ticket, args.data_root)
        plain, _ = train_plain(ticket, cache[key], args.seed)
        recorded = float(ticket.metrics["test_acc"])
        row = {"run": run.name, "level": level, "control": args.control or "", "density": ticket.density,
               "recorded": recorded, "plain": plain, "diff_points": 100 * (plain - recorded)}  # fmt: skip
        rows.append(row)
        print(f"{run.name:12s} {level:5d} {row['control'] or '-':8s} {ticket.density:.4f}   {100 * recorded:6.2f}"
              f"   {100 * plain:6.2f}   {row['diff_points']:+.2f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
