"""The `cacl` command: `cacl train` (the whole curriculum, then the test of the best checkpoint) and `cacl test`."""

from __future__ import annotations

from collections.abc import Sequence

from cacl.data import CaclDataModule
from cacl.module import CaclModule
from cvlab_shared.cli import run_cli


def main(args: Sequence[str] | None = None) -> None:
    """No checkpoint is chosen by target test mAP (that would use target labels): `train` tests the last epoch."""
    run_cli(CaclModule, CaclDataModule, package="cacl", args=args, monitor=None)
