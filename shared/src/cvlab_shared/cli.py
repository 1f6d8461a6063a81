"""LightningCLI base for every package's console script: `train` (fit, then test the best checkpoint) and `test`.

A package's `cli.py` is one call::

    def main(args=None):
        run_cli(ClassifierModule, ClassificationDataModule, package="acls", args=args)

What it gives: YAML configs shipped in ``<package>/configs/`` selectable by name (``--config cifar10``), an embedded
default (``configs/default.yaml``) so ``<cmd> train`` with no arguments runs, ``--print_config``, the resolved config
saved beside every run, a CSV logger by default (``--logger wandb`` for an offline wandb run), checkpoints of the best
and the last epoch (``--ckpt_path`` resumes), and a progress display that does not flood non-terminal output.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from cvlab_shared.logging import EpochPrinter, is_interactive

RUNS_DIR = "runs"

# Lightning 2.6 on torch >= 2.15 warns about its own pytree use once per epoch; it is not actionable for users.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=DeprecationWarning)


class Trainer(pl.Trainer):
    """Lightning's Trainer with `train`: fit, then test the best checkpoint, as the papers' scripts do."""

    def train(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | None = None,
        ckpt_path: str | None = None,
    ) -> list[dict[str, float]]:
        """Fit the model (resuming from `ckpt_path` if given), then test the best checkpoint."""
        self.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        best = ""
        if self.checkpoint_callback is not None:
            best = getattr(self.checkpoint_callback, "best_model_path", "") or ""
        if best and self.is_global_zero:
            print(f"testing the best checkpoint: {best}", flush=True)
        # The checkpoint was written by this very run (trusted); it holds hyper-parameters beyond plain tensors.
        return self.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=False)


class CvlabCLI(LightningCLI):
    """Subcommands `train` and `test`; a ModelCheckpoint configurable under `checkpoint.*`."""

    checkpoint_defaults: dict[str, Any] = {}

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"train": {"model", "datamodule"}, "test": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({f"checkpoint.{k}": v for k, v in self.checkpoint_defaults.items()})


def packaged_configs(package: str) -> dict[str, Path]:
    """The YAML configs a package ships in `<package>/configs/`, by name (file stem)."""
    folder = resources.files(package) / "configs"
    if not folder.is_dir():
        return {}
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith((".yaml", ".yml"))}


def resolve_config_names(args: Sequence[str], package: str) -> list[str]:
    """Replace `--config NAME` by the path of the packaged config NAME when NAME is not an existing file."""
    configs = packaged_configs(package)
    out: list[str] = []
    it = iter(range(len(args)))
    items = list(args)
    for i in it:
        arg = items[i]
        value = None
        if arg == "--config" and i + 1 < len(items):
            value, skip = items[i + 1], True
        elif arg.startswith("--config="):
            value, skip = arg.split("=", 1)[1], False
        if value is None:
            out.append(arg)
            continue
        if not Path(value).exists():
            name = Path(value).stem if value.endswith((".yaml", ".yml")) else value
            if name not in configs:
                known = ", ".join(sorted(configs)) or "none"
                raise SystemExit(f"error: config '{value}' is neither a file nor a packaged config; packaged: {known}")
            value = str(configs[name])
        out += ["--config", value]
        if skip:
            next(it, None)
    return out


def resolve_logger(args: Sequence[str], package: str) -> list[str]:
    """`--logger csv` (default) or `--logger wandb` (offline unless WANDB_MODE=online is set) as trainer args."""
    out: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == "--logger" or arg.startswith("--logger="):
            value = arg.split("=", 1)[1] if "=" in arg else (items[i + 1] if i + 1 < len(items) else "")
            i += 1 if "=" in arg else 2
            if value == "csv":
                continue
            if value != "wandb":
                raise SystemExit(f"error: --logger must be 'csv' or 'wandb', got '{value}'")
            try:
                import wandb  # noqa: F401
            except ImportError:
                raise SystemExit("error: --logger wandb needs wandb: pip install 'cvlab-shared[wandb]'") from None
            offline = os.environ.get("WANDB_MODE", "offline") != "online"
            out += [
                "--trainer.logger=lightning.pytorch.loggers.WandbLogger",
                f"--trainer.logger.project={package}",
                f"--trainer.logger.save_dir={RUNS_DIR}",
                f"--trainer.logger.offline={str(offline).lower()}",
            ]
            continue
        out.append(arg)
        i += 1
    return out


def run_cli(
    model_class: type[pl.LightningModule],
    datamodule_class: type[pl.LightningDataModule],
    package: str,
    args: Sequence[str] | None = None,
    monitor: str | None = None,
    mode: str = "max",
    subclass_mode_model: bool = False,
    subclass_mode_data: bool = False,
    run: bool = True,
) -> CvlabCLI:
    """Build and run the package's CLI. `monitor`/`mode` choose the checkpoint kept as best (e.g. "val/acc")."""
    argv = list(sys.argv[1:] if args is None else args)
    argv = resolve_logger(resolve_config_names(argv, package), package)
    default = packaged_configs(package).get("default")
    defaults = [str(default)] if default is not None else []
    epilog = "packaged configs (--config NAME): " + ", ".join(sorted(packaged_configs(package)))
    sub_kwargs = {"default_config_files": defaults, "epilog": epilog}

    class _CLI(CvlabCLI):
        checkpoint_defaults = {"monitor": monitor, "mode": mode, "save_last": True, "save_top_k": 1}

    cli_args: list[str] | None = argv
    if args is None or list(args) == sys.argv[1:]:
        # LightningCLI warns when given args beside a command line: hand it the rewritten command line instead.
        sys.argv = [sys.argv[0], *argv]
        cli_args = None
    trainer_defaults = {
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": RUNS_DIR, "name": package}},
        "enable_progress_bar": is_interactive(),
        "callbacks": [EpochPrinter()],
    }
    return _CLI(
        model_class,
        datamodule_class,
        trainer_class=Trainer,
        trainer_defaults=trainer_defaults,
        seed_everything_default=0,
        subclass_mode_model=subclass_mode_model,
        subclass_mode_data=subclass_mode_data,
        parser_kwargs={"prog": package.replace("_", "-"), "train": sub_kwargs, "test": sub_kwargs},
        save_config_kwargs={"overwrite": True},
        args=cli_args,
        run=run,
    )
