"""The `az-nas` command: `search` (training-free search), `train` and `test` (Lightning, via the core's CLI)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: az-nas {search,train,test} [options]

  search   rank candidate networks with AZ-NAS (no training); `az-nas search --help`
  train    train a chosen architecture (LightningCLI); `az-nas train --help`
  test     evaluate a checkpoint; `az-nas test --help`
"""


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "search":
        from az_nas.search_cli import search_main

        search_main(rest)
    elif command in ("train", "test"):
        from cvlab_shared.cli import run_cli
        from cvlab_shared.data.classification_datamodule import ClassificationDataModule

        from az_nas.module import NASClassifier

        run_cli(NASClassifier, ClassificationDataModule, package="az_nas", args=[command, *rest],
                monitor="val/acc", mode="max")
    else:
        print(USAGE)
        raise SystemExit(f"unknown command {command!r}")
