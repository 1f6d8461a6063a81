"""The `stmn` command: `stmn train` (fit, then test under the RRS and all-frames protocols) and `stmn test`."""

from __future__ import annotations

from collections.abc import Sequence

from cvlab_shared.cli import run_cli
from stmn.data import StmnDataModule
from stmn.module import StmnModule


def main(args: Sequence[str] | None = None) -> None:
    """The official code keeps the epoch with the best test-set rank-1; we test the last epoch (no test-set choice)."""
    run_cli(StmnModule, StmnDataModule, package="stmn", args=args, monitor=None)
