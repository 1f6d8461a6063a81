"""`acls train` / `acls test`: LightningCLI over the ACLS classifier and the classification datamodule."""

from __future__ import annotations

from collections.abc import Sequence

from acls.data import ClassificationDataModule
from acls.module import ACLSClassifier
from cvlab_shared.cli import run_cli


def main(args: Sequence[str] | None = None) -> None:
    run_cli(ACLSClassifier, ClassificationDataModule, package="acls", args=args, monitor="val/acc", mode="max")
