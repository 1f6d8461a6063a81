"""The `oimnet-pp` command: `oimnet-pp train` (fit, then test the last checkpoint) and `oimnet-pp test`.

`--plot` (test, or the test after train) saves the first queries with their top-5 gallery hits and boxes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cvlab_shared.cli import run_cli
from oimnet_pp.data import PersonSearchDataModule
from oimnet_pp.module import OIMNetModule


def _plot_flag(args: list[str]) -> list[str]:
    return ["--model.plot=true" if a == "--plot" else a for a in args]


def main(args: Sequence[str] | None = None) -> None:
    """Person search has no validation split: the checkpoint kept is the last one (`monitor=None`)."""
    if args is None:
        sys.argv = [sys.argv[0], *_plot_flag(sys.argv[1:])]
    else:
        args = _plot_flag(list(args))
    run_cli(OIMNetModule, PersonSearchDataModule, package="oimnet_pp", args=args, monitor=None)
