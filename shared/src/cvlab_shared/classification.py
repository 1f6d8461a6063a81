"""`CalibratedClassifier`: a plain LightningModule for image classification evaluated for calibration.

Paper packages pass a `loss` module (called as `loss(logits, targets)`; its detached `components` dict, if any,
is logged) or subclass it and override `training_loss(batch, batch_idx)` (a mixup scheme...). It
- builds the backbone with `build_model` (`self.model`, with `forward_feature_map` / `forward_head`),
- trains with SGD + MultiStepLR (the official recipe; gradient clipping is the Trainer's `gradient_clip_val`),
- logs val/acc, val/nll, val/ece every epoch from logits gathered over DDP ranks,
- on test, with the datamodule's [validation, test] loaders: fits a temperature on the validation logits,
  prints ACC / ECE / AECE / CECE / NLL before and after temperature scaling, logs them as test/* and test_ts/*,
  writes `reliability.png` and `calibration.json` into the run folder (the logger's; with no logger a new
  `runs/<package>/version_N`, never the current directory) and keeps them in `self.test_results`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from cvlab_shared.metrics.calibration import DEFAULT_BINS, calibration_report
from cvlab_shared.metrics.calibration_metric import LogitCollector
from cvlab_shared.metrics.reliability import reliability_diagram
from cvlab_shared.metrics.temperature import fit_temperature
from cvlab_shared.models.classification import build_model
from cvlab_shared.runs import output_folder

REPORTED = ("acc", "ece", "aece", "cece", "nll")


def format_report(before: dict[str, float], after: dict[str, float], temperature: float) -> str:
    """A small table of the metrics (in %, NLL as is) before and after temperature scaling."""
    names = [*REPORTED, "brier"]
    lines = ["            " + " ".join(f"{n.upper():>8}" for n in names)]
    for label, values in (("test", before), (f"test T={temperature:.3f}", after)):
        cells = [f"{values[n]:8.4f}" if n in ("nll", "brier") else f"{100 * values[n]:8.2f}" for n in names]
        lines.append(f"{label:<12}" + " ".join(cells))
    return "\n".join(lines)


def loss_spec(loss: torch.nn.Module) -> dict[str, Any] | None:
    """{"class_path", "init_args"} that rebuild `loss`, read from its attributes named like its `__init__` arguments.

    None when an argument is not kept as an attribute of the same name (the loss cannot be rebuilt from itself).
    """
    cls = type(loss)
    init_args = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name not in vars(loss):
            return None
        value = vars(loss)[name]
        if not isinstance(value, (bool, int, float, str, type(None), list, tuple)):
            return None
        init_args[name] = value
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def loss_from_spec(spec: Mapping[str, Any]) -> torch.nn.Module:
    """The loss module a `loss_spec` describes; its class must be an nn.Module of an already imported module."""
    module_name, _, name = str(spec["class_path"]).rpartition(".")
    if module_name not in sys.modules:  # a checkpoint never makes us import new code
        raise ValueError(f"loss class {spec['class_path']!r}: import {module_name!r} before loading the checkpoint")
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"loss class {spec['class_path']!r} is not a torch.nn.Module")
    return cls(**dict(spec.get("init_args") or {}))


class CalibratedClassifier(pl.LightningModule):
    def __init__(
        self,
        num_classes: int = 10,
        backbone: str = "small_cnn",
        in_channels: int = 3,
        pretrained: str | None = None,
        loss: torch.nn.Module | None = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        n_bins: int = DEFAULT_BINS,
        official_aece: bool = False,
        temperature_method: str = "nll",
        cpu_threads: int | None = None,
    ) -> None:
        """Image classifier trained with SGD and evaluated for calibration.

        Args:
            num_classes: number of classes (must match the datamodule).
            backbone: small_cnn | resnet50 | resnet101 | resnet{50,101}_cifar | resnet{50,101}_tiny.
            in_channels: input channels (1 for digits).
            pretrained: a weights file for the backbone (nothing is downloaded).
            loss: training loss called as loss(logits, targets) (default: cross-entropy); a {"class_path",
                "init_args"} mapping (as checkpoints store it) is built first.
            lr: SGD learning rate.
            momentum: SGD momentum.
            weight_decay: SGD weight decay.
            nesterov: Nesterov momentum.
            milestones: epochs at which the learning rate is multiplied by lr_gamma (MultiStepLR).
            lr_gamma: learning-rate factor at each milestone.
            n_bins: bins of ECE / AECE / CECE.
            official_aece: reproduce the official AECE (drops the lowest-confidence sample).
            temperature_method: nll | ece_grid | nll_grid (ece_grid is the official search).
            cpu_threads: torch CPU threads (None keeps torch's default; 1 is fastest for tiny models on a busy CPU).
        """
        super().__init__()
        if isinstance(loss, Mapping):
            loss = loss_from_spec(loss)
        self._save_hyperparameters_with_loss()
        self.loss = loss if loss is not None else torch.nn.CrossEntropyLoss()
        self.model = build_model(backbone, num_classes, pretrained=pretrained, in_channels=in_channels)
        self.val_logits = LogitCollector()
        self.test_logits = torch.nn.ModuleList([LogitCollector(), LogitCollector()])
        self.test_results: dict[str, Any] = {}

    def _save_hyperparameters_with_loss(self) -> None:
        """Save every `__init__` argument (this class's and a subclass's) so that a checkpoint rebuilds the model.

        A subclass's `loss` (a name such as "mndcg", or LightningCLI's class_path/init_args) is kept as given; a loss
        module is stored as its `loss_spec`, so `load_from_checkpoint` rebuilds the loss the model was trained with.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            self.save_hyperparameters(frame=inspect.currentframe().f_back)
        given = self.hparams.get("loss")
        if isinstance(given, torch.nn.Module):
            spec = loss_spec(given)
            if spec is None:
                warnings.warn(f"{type(given).__name__} does not keep its arguments as attributes: a checkpoint of this "
                              "model cannot rebuild it (pass loss= to load_from_checkpoint)", stacklevel=3)
            self.hparams["loss"] = spec
            self._hparams_initial["loss"] = spec

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_loss(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss to minimise and extra values to log (the loss module's `components`, if it keeps any).

        `batch_idx` is the step's index in the epoch (for subclasses whose loss draws seeded randomness per step).
        """
        x, y = batch
        loss = self.loss(self(x), y)
        return loss, dict(getattr(self.loss, "components", {}))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, parts = self.training_loss(batch, batch_idx)
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(batch[1]))
        for name, value in parts.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(batch[1]))
        return loss

    def setup(self, stage: str) -> None:
        if self.hparams.cpu_threads:
            torch.set_num_threads(self.hparams.cpu_threads)
        datamodule = getattr(self.trainer, "datamodule", None)
        expected = getattr(datamodule, "num_classes", None)
        if expected is not None and expected != self.hparams.num_classes:
            raise ValueError(f"model.num_classes={self.hparams.num_classes} but the data has {expected} classes")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_logits.update(self(x), y)

    def on_validation_epoch_end(self) -> None:
        logits, targets = self.val_logits.compute()
        self.val_logits.reset()
        report = calibration_report(logits, targets, self.hparams.n_bins, self.hparams.official_aece)
        for name in ("acc", "nll", "ece"):
            self.log(f"val/{name}", report[name], sync_dist=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        self.test_logits[dataloader_idx].update(self(x), y)

    def on_test_epoch_end(self) -> None:
        hp = self.hparams
        loaders = self.trainer.test_dataloaders
        with_val = isinstance(loaders, (list, tuple)) and len(loaders) == 2
        test_logits, test_targets = self.test_logits[1 if with_val else 0].compute()
        before = calibration_report(test_logits, test_targets, hp.n_bins, hp.official_aece)
        temperature, after = 1.0, before
        if with_val:
            val_logits, val_targets = self.test_logits[0].compute()
            temperature = fit_temperature(val_logits, val_targets, hp.temperature_method, hp.n_bins)
            after = calibration_report(test_logits / temperature, test_targets, hp.n_bins, hp.official_aece)
        for collector in self.test_logits:
            collector.reset()
        for name, value in before.items():
            self.log(f"test/{name}", value, sync_dist=True, add_dataloader_idx=False)
        for name, value in after.items():
            self.log(f"test_ts/{name}", value, sync_dist=True, add_dataloader_idx=False)
        self.log("test_ts/temperature", float(temperature), sync_dist=True, add_dataloader_idx=False)
        self.test_results = {
            "temperature": temperature,
            "test": {k: float(v) for k, v in before.items()},
            "test_ts": {k: float(v) for k, v in after.items()},
            "num_test_samples": int(test_targets.numel()),
        }
        folder = output_folder(self.trainer, type(self).__module__.split(".")[0])  # a collective under DDP
        if self.trainer.is_global_zero:
            self._write_outputs(folder, test_logits, test_targets, temperature)

    def _write_outputs(self, folder: Path, logits: Tensor, targets: Tensor, temperature: float) -> None:
        results = self.test_results
        print(format_report(results["test"], results["test_ts"], temperature), flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "calibration.json").write_text(json.dumps(results, indent=2))
        panels = {"test": (logits, targets), f"test, T={temperature:.2f}": (logits / temperature, targets)}
        path = reliability_diagram(panels, folder / "reliability.png", self.hparams.n_bins)
        print(f"reliability diagram: {path}", flush=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.nesterov
        )
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(hp.milestones or []), gamma=hp.lr_gamma
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
