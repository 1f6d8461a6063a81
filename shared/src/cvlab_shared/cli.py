"""LightningCLI base for every package's console script: `train` (fit, then test the best checkpoint) and `test`.

A package's `cli.py` is one call::

    def main(args=None):
        run_cli(ClassifierModule, ClassificationDataModule, package="acls", args=args)

What it gives: YAML configs shipped in ``<package>/configs/`` selectable by name (``--config cifar10``), an embedded
default (``configs/default.yaml``) so ``<cmd> train`` with no arguments runs, ``--print_config``, the resolved config
saved beside every run, a CSV logger by default (``--logger wandb`` for an offline wandb run), checkpoints of the best
and the last epoch (``last.ckpt`` after every epoch; ``--ckpt_path`` resumes in the same run folder, exactly), and a
progress display that does not flood non-terminal output.

Inputs are checked before any model or Trainer is built (data roots and layouts, checkpoint files, config names,
`--trainer.max_epochs`); a problem is one ``error: ...`` line on stderr and exit status 2 (``--debug`` or
``CVLAB_DEBUG=1`` shows the traceback), and nothing is written. A run that fails before its first checkpoint leaves
no run folder behind.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from cvlab_shared.data.checks import InputError, check_checkpoint, check_datamodule
from cvlab_shared.logging import EpochPrinter, EpochSeeder, RunCSVLogger, format_metrics, is_interactive, quiet_lightning

RUNS_DIR = "runs"
DEBUG_ENV = "CVLAB_DEBUG"

# Lightning 2.6 on torch >= 2.15 warns about its own pytree use once per epoch; it is not actionable for users.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

VOCABULARY = """\
data and run folders (the same words in every package):
  --data.data_root DIR      the folder that holds a dataset (one domain)
  --data.source_root DIR, --data.target_root DIR   the two folders of a domain-adaptation pair
  synthetic data (the default runs) is written once to $CVLAB_CACHE (default ~/.cache/cvlab), never to the
  current folder; a root given for a dataset that does not read one is refused
  runs/<command>/version_N/  config.yaml, metrics.csv, checkpoints/{best, last.ckpt}; last.ckpt after every epoch
  --ckpt_path runs/<command>/version_N/checkpoints/last.ckpt   train: resume exactly, in the same run folder
                                                                test: evaluate that checkpoint
  --data.batch_size N       images per process and step (with --trainer.devices 4, each of the 4 processes
                            reads N images per step), as Lightning users expect
  errors are one 'error: ...' line with exit status 2; --debug (or CVLAB_DEBUG=1) shows the traceback"""

SUBCOMMAND_HELP = {
    "train": "Train (resumable with --ckpt_path), then test the best checkpoint (the last one when no metric picks a "
    "best) and print the package's results table.",
    "test": "Evaluate a checkpoint (--ckpt_path) on the test split and print the package's results table; nothing is "
    "trained.",
}


def debug_enabled() -> bool:
    """True when tracebacks are wanted (`CVLAB_DEBUG=1`, or `--debug` on the command line, which sets it)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false", "no")


def one_line(exc: BaseException) -> str:
    """The message of an exception on one line (layout hints that were on their own line joined with '; ')."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)) and exc.filename:
        if str(exc).startswith("[Errno"):
            text = f"{exc.strerror}: {exc.filename}"
        else:
            text = str(exc)
    else:
        text = str(exc.args[0]) if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    text = "; ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    return text or type(exc).__name__


def fail(exc: BaseException | str) -> None:
    """Print `error: <message>` on stderr (the traceback first with --debug) and exit with status 2."""
    if isinstance(exc, BaseException) and debug_enabled():
        traceback.print_exception(exc)
    message = exc if isinstance(exc, str) else one_line(exc)
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def take_debug_flag(args: list[str]) -> list[str]:
    """Remove `--debug` from the arguments and set CVLAB_DEBUG=1 if it was there."""
    if "--debug" in args:
        os.environ[DEBUG_ENV] = "1"
        args = [a for a in args if a != "--debug"]
    return args


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

    def test(
        self,
        model: pl.LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = False,
        datamodule: pl.LightningDataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Evaluate on the test split. A module that prints its own results (it keeps them in `test_results`) is
        left to it; otherwise one `test: name=value ...` line is printed (`verbose` adds Lightning's table)."""
        results = super().test(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)
        module = model if model is not None else self.lightning_module
        if not verbose and self.is_global_zero and not hasattr(module, "test_results"):
            merged = {k: v for r in results for k, v in r.items() if k.startswith("test")}
            print(f"test: {format_metrics(merged)}", flush=True)
        return results


def _run_folder(trainer: pl.Trainer) -> Path | None:
    """The CSV logger's run folder (computed locally: no collective call)."""
    for logger in trainer.loggers:
        if isinstance(logger, RunCSVLogger) or type(logger).__name__ == "CSVLogger":
            return Path(logger.log_dir)
    return None


def _remove_failed_run(folder: Path | None) -> None:
    """Delete a run folder this run created if it holds no checkpoint (nothing to resume), and then-empty parents."""
    if folder is None or not folder.is_dir() or any(folder.rglob("*.ckpt")):
        return
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    while parent.name and parent != Path.cwd() and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        if parent.name == RUNS_DIR:
            break
        parent = parent.parent


class CvlabCLI(LightningCLI):
    """Subcommands `train` and `test`; a ModelCheckpoint configurable under `checkpoint.*`; inputs checked first."""

    checkpoint_defaults: dict[str, Any] = {}
    check_data: Callable[[pl.LightningDataModule, str], None] | None = None
    parse_only = False

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"train": {"model", "datamodule"}, "test": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({f"checkpoint.{k}": v for k, v in self.checkpoint_defaults.items()})

    # ---- checks before anything is built ------------------------------------------------------------------------
    def _section(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def _parse_ckpt_path(self) -> None:
        # Called right after parsing, before seeding and before Lightning reads the checkpoint's hyper-parameters:
        # check every input here, so that a problem is the only thing printed.
        self._check_inputs()
        super()._parse_ckpt_path()

    def _set_seed(self) -> None:
        if not self.parse_only:
            super()._set_seed()

    def _check_inputs(self) -> None:
        self.early_datamodule: pl.LightningDataModule | None = None
        if self.parse_only:
            return
        self.subcommand = self.config.get("subcommand")
        cfg = self._section()
        if cfg.get("ckpt_path"):
            check_checkpoint(cfg.ckpt_path)
        trainer = cfg.get("trainer") or {}
        if self.subcommand == "train" and trainer.get("max_epochs") == -1 and trainer.get("max_steps", -1) in (-1, None):
            raise InputError(
                "--trainer.max_epochs -1 trains forever and never tests; give a number of epochs (e.g. 30)"
            )
        check_model_options(cfg.get("model"), self.subcommand or "train")
        self.early_datamodule = self._build_datamodule(cfg)
        if self.early_datamodule is not None:
            stage = "test" if self.subcommand == "test" else "fit"
            (self.check_data or check_datamodule)(self.early_datamodule, stage)
        if self.subcommand == "train" and cfg.get("ckpt_path"):
            self._resume_in_run_folder(cfg, Path(cfg.ckpt_path))

    def _build_datamodule(self, cfg) -> pl.LightningDataModule | None:
        from jsonargparse import Namespace

        data = cfg.get("data")
        if data is None or self.datamodule_class is None:
            return None
        cls, kwargs = self.datamodule_class, data
        if isinstance(data, Namespace) and "class_path" in data:
            module, _, name = data.class_path.rpartition(".")
            cls, kwargs = getattr(importlib.import_module(module), name), data.get("init_args") or {}
        kwargs = kwargs.as_dict() if isinstance(kwargs, Namespace) else dict(kwargs)
        return cls(**kwargs)

    def _resume_in_run_folder(self, cfg, ckpt: Path) -> None:
        """Resuming `<run>/checkpoints/last.ckpt` logs into `<run>` again, appending to its metrics.csv."""
        logger = (cfg.get("trainer") or {}).get("logger")
        if not logger or not str(getattr(logger, "class_path", "")).endswith("RunCSVLogger"):
            return
        logger.init_args.append = True
        run = ckpt.expanduser().absolute().parent
        if run.name == "checkpoints" and ((run.parent / "metrics.csv").exists() or (run.parent / "config.yaml").exists()):
            # the same spelling as the first run (relative to the current folder), so that ModelCheckpoint reloads
            # its best-k bookkeeping instead of warning that its folder changed
            where = run.parent.parent
            if where.is_relative_to(Path.cwd()):
                where = where.relative_to(Path.cwd())
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            logger.init_args.save_dir = str(where)
            logger.init_args.name = ""
            logger.init_args.version = run.parent.name

    def instantiate_classes(self) -> None:
        if self.parse_only:
            return
        super().instantiate_classes()
        if self.early_datamodule is not None:
            self.datamodule = self.early_datamodule  # the checked (and possibly already read) instance
            (self.config_init[self.subcommand] if self.subcommand else self.config_init)["data"] = self.datamodule
        self.run_folder = _run_folder(self.trainer) if self.trainer.is_global_zero else None
        self.run_folder_existed = self.run_folder is not None and self.run_folder.exists()

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if not self.run_folder_existed:
                _remove_failed_run(self.run_folder)
            raise


def check_model_options(model: Any, subcommand: str = "train") -> None:
    """The model's file options, before anything is built: checkpoints and weights files must exist, and a paper
    config's `pretrained: required` must be answered in `train` (a file, or `none` to train from scratch). In `test`
    the weights come from the checkpoint, so `required` is read as `none` there (set in `model` in place)."""
    for key, value in _flatten(model):
        name = key.rsplit(".", 1)[-1]
        if not isinstance(value, str) or value.strip().lower() in ("", "none", "null"):
            continue
        if name.endswith("checkpoint"):
            check_checkpoint(value, f"--model.{key}")
        elif name == "pretrained" and value.strip().lower() == "required":
            if subcommand == "test":
                model[key] = None
                continue
            # a paper config's sentinel: it starts from pretrained weights and never trains from scratch unasked
            raise InputError(
                f"this config starts from pretrained weights: pass --model.{key} FILE (a local weights file; "
                f"nothing is downloaded), or --model.{key} none to train from scratch"
            )
        elif name == "pretrained" and not Path(value).expanduser().is_file():
            raise InputError(f"--model.{key} {value} does not exist (a local weights file; nothing is downloaded)")


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    from jsonargparse import Namespace

    if isinstance(value, Namespace):
        value = value.as_dict()
    if not isinstance(value, dict):
        return [(prefix, value)] if prefix else []
    out: list[tuple[str, Any]] = []
    for k, v in value.items():
        key = k if k != "init_args" else ""
        out += _flatten(v, ".".join(p for p in (prefix, key) if p))
    return out


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
                raise InputError(f"config '{value}' is neither a file nor a packaged config; packaged: {known}")
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
                raise InputError(f"--logger must be 'csv' or 'wandb', got '{value}'")
            try:
                import wandb  # noqa: F401
            except ImportError:
                raise InputError("--logger wandb needs wandb: pip install 'cvlab-shared[wandb]'") from None
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


def _data_options(datamodule_class: type) -> list[str]:
    try:
        names = list(inspect.signature(datamodule_class.__init__).parameters)
    except (TypeError, ValueError):
        return []
    order = ("dataset", "data_root", "source", "source_root", "target", "target_root", "batch_size")
    return [n for n in order if n in names]


def summary(
    package: str, subcommand: str | None, datamodule_class: type | None = None, test_example: str | None = None
) -> str:
    """The short help printed before LightningCLI's full listing: what the command does, the packaged configs, the
    options people change, the shared vocabulary and an example."""
    prog = package.replace("_", "-")
    try:
        about = (importlib.import_module(package).__doc__ or "").strip().splitlines()[0]
    except (ImportError, IndexError):
        about = ""
    configs = sorted(packaged_configs(package))
    named = [c for c in configs if c != "default"]
    lines = [f"{prog} {subcommand or '{train,test}'}: {about}".rstrip(": ")]
    for sub in [subcommand] if subcommand else ["train", "test"]:
        lines.append(f"  {sub}: {SUBCOMMAND_HELP[sub]}")
    lines.append("")
    lines.append(f"packaged configs (--config NAME): {', '.join(configs) or 'none'}"
                 + ("; 'default' runs when no --config is given" if "default" in configs else ""))
    lines.append("common options:")
    data = _data_options(datamodule_class) if datamodule_class is not None else []
    for name in data:
        lines.append(f"  --data.{name}")
    lines += [
        "  --trainer.max_epochs N   --trainer.accelerator cpu|gpu   --trainer.devices N   --seed_everything N",
        "  --ckpt_path FILE   --print_config   --logger csv|wandb   --debug",
        "",
        VOCABULARY,
        "",
        "examples:",
        f"  {prog} train" + (f"                      # the packaged default" if "default" in configs else ""),
    ]
    if named:
        lines.append(f"  {prog} train --config {named[0]} --trainer.max_epochs 2")
    lines.append(f"  {prog} " + (test_example or f"test --ckpt_path runs/{prog}/version_0/checkpoints/last.ckpt"))
    lines.append("")
    lines.append("all options (LightningCLI):" if subcommand else "")
    return "\n".join(lines)


def _checkpoint_defaults(monitor: str | None, mode: str) -> dict[str, Any]:
    # last.ckpt after every training epoch (also when validation runs only every few epochs), so an interruption
    # loses at most one epoch; Lightning 2 validates before `on_train_epoch_end`, so the monitored value is current.
    return {"monitor": monitor, "mode": mode, "save_last": True, "save_top_k": 1, "save_on_train_epoch_end": True}


def _make_cli_class(monitor: str | None, mode: str, check_data, parse_only: bool = False) -> type[CvlabCLI]:
    class _CLI(CvlabCLI):
        checkpoint_defaults = _checkpoint_defaults(monitor, mode)

    _CLI.check_data = staticmethod(check_data) if check_data is not None else None
    _CLI.parse_only = parse_only
    return _CLI


def _trainer_defaults(package: str) -> dict[str, Any]:
    return {
        # runs/<command>/version_N: the command's spelling (az-nas), not the import name (az_nas)
        "logger": {
            "class_path": "cvlab_shared.logging.RunCSVLogger",
            "init_args": {"save_dir": RUNS_DIR, "name": package.replace("_", "-")},
        },
        "enable_progress_bar": is_interactive(),
        "callbacks": [EpochPrinter(), EpochSeeder()],
    }


def parse_config(
    model_class: type[pl.LightningModule],
    datamodule_class: type[pl.LightningDataModule],
    package: str,
    args: Sequence[str],
) -> Any:
    """The merged config (defaults, default.yaml, every --config in order, then --x.y=value) exactly as the package's
    `train`/`test` would see it, built by LightningCLI's own parser; nothing is instantiated or checked."""
    argv = resolve_logger(resolve_config_names(list(args), package), package)
    default = packaged_configs(package).get("default")
    cls = _make_cli_class(None, "max", None, parse_only=True)
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")
    cli = cls(
        model_class,
        datamodule_class,
        trainer_class=Trainer,
        trainer_defaults=_trainer_defaults(package),
        seed_everything_default=0,
        parser_kwargs={"prog": package.replace("_", "-"), "default_config_files": [str(default)] if default else []},
        save_config_callback=None,
        args=argv,
        run=False,
    )
    return cli.config


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
    check_data: Callable[[pl.LightningDataModule, str], None] | None = None,
    show_summary: bool = True,
) -> CvlabCLI:
    """Build and run the package's CLI. `monitor`/`mode` choose the checkpoint kept as best (e.g. "val/acc").

    `check_data(datamodule, stage)` replaces the datamodule's own `check_data` (see `cvlab_shared.data.checks`); it
    runs before the model and Trainer are built and must not write anything. Input errors end the program with one
    `error:` line and exit status 2. `show_summary=False`: a driver printed the short help summary itself.
    """
    quiet_lightning()
    argv = take_debug_flag(list(sys.argv[1:] if args is None else args))
    if show_summary and any(a in ("-h", "--help") for a in argv):
        sub = argv[0] if argv and argv[0] in SUBCOMMAND_HELP else None
        print(summary(package, sub, datamodule_class), flush=True)
    try:
        argv = resolve_logger(resolve_config_names(argv, package), package)
    except InputError as exc:
        fail(exc)
    default = packaged_configs(package).get("default")
    defaults = [str(default)] if default is not None else []
    epilog = "packaged configs (--config NAME): " + ", ".join(sorted(packaged_configs(package)))
    sub_kwargs = {"train": {"default_config_files": defaults, "epilog": epilog, "description": SUBCOMMAND_HELP["train"]},
                  "test": {"default_config_files": defaults, "epilog": epilog, "description": SUBCOMMAND_HELP["test"]}}
    cli_class = _make_cli_class(monitor, mode, check_data)
    cli_args: list[str] | None = argv
    if args is None or list(args) == sys.argv[1:]:
        # LightningCLI warns when given args beside a command line: hand it the rewritten command line instead.
        sys.argv = [sys.argv[0], *argv]
        cli_args = None
    # Called from Python (a driver such as dkd's, or a test), sys.argv stays the caller's: DDP relaunches it.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")
    try:
        return cli_class(
            model_class,
            datamodule_class,
            trainer_class=Trainer,
            trainer_defaults=_trainer_defaults(package),
            seed_everything_default=0,
            subclass_mode_model=subclass_mode_model,
            subclass_mode_data=subclass_mode_data,
            parser_kwargs={"prog": package.replace("_", "-"), **sub_kwargs},
            save_config_kwargs={"overwrite": True},
            args=cli_args,
            run=run,
        )
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if debug_enabled() or not _is_input_error(exc):
            raise
        fail(exc)
    raise AssertionError("unreachable")


def _is_input_error(exc: BaseException) -> bool:
    """Errors about the user's input (shown as one line): our InputError, missing or unreadable files and folders,
    and anything raised while the command line was checked and the classes built (before any training)."""
    if isinstance(exc, (InputError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return True
    frames = [f.name for f in traceback.extract_tb(exc.__traceback__)]
    return "_run_subcommand" not in frames
