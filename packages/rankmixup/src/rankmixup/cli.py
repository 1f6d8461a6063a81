"""`rankmixup train` / `rankmixup test`: the core's LightningCLI over RankMixupClassifier and the classification data."""

from __future__ import annotations

from collections.abc import Sequence

from cvlab_shared.cli import run_cli
from cvlab_shared.data.classification_datamodule import ClassificationDataModule
from rankmixup.module import RankMixupClassifier


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the `rankmixup` command; with no arguments it trains the packaged default on noisy digits."""
    run_cli(RankMixupClassifier, ClassificationDataModule, package="rankmixup", args=args, monitor="val/acc", mode="max")
