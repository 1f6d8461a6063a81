"""The `vireid-dense` command: `train` (fit, then test), `test` (`--plot PATH` saves the correspondence figure) and
`regdb-splits` (train and test RegDB splits 1..10 in turn, then print the mean of both directions)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cvlab_shared.cli import run_cli
from cvlab_shared.data.vi_reid import VIDatasetError
from vireid_dense.data import VIReidDataModule
from vireid_dense.module import LbAModule, results_table


def _rewrite_plot(argv: list[str]) -> list[str]:
    """`--plot PATH` / `--plot=PATH` -> `--model.plot_path PATH`."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--plot" and i + 1 < len(argv):
            out += ["--model.plot_path", argv[i + 1]]
            i += 2
            continue
        if argv[i].startswith("--plot="):
            out.append("--model.plot_path=" + argv[i].split("=", 1)[1])
        else:
            out.append(argv[i])
        i += 1
    return out


def _run(argv: list[str]):
    # The rewritten arguments become the command line (LightningCLI warns when handed args beside a command line).
    sys.argv = [sys.argv[0], *argv]
    return run_cli(LbAModule, VIReidDataModule, package="vireid_dense", args=None, monitor=None)


def regdb_splits(argv: list[str], splits: Sequence[int] = range(1, 11)) -> dict[str, float]:
    """`train` on each RegDB split with `--data.trial N` (other arguments passed through); prints each split's
    table and the mean over splits (the paper's protocol)."""
    if any(a.startswith("--data.trial") for a in argv):
        raise VIDatasetError("regdb-splits sets --data.trial itself (1..10); leave it out")
    runs = []
    for trial in splits:
        cli = _run(["train", "--data.dataset=regdb", f"--data.trial={trial}", *argv])
        runs.append(dict(cli.model.results))
    mean = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
    print(f"mean over RegDB splits {list(splits)}:")
    print(results_table(mean, "regdb", cli.model.hparams.method), flush=True)
    return mean


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the console script; data-layout problems end with one `error:` line and exit status 2."""
    argv = _rewrite_plot(list(sys.argv[1:] if args is None else args))
    try:
        if argv and argv[0] == "regdb-splits":
            regdb_splits(argv[1:])
        else:
            _run(argv)
    except VIDatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
