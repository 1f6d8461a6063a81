"""`alife train` runs every stage of every step of a class-incremental task; `alife test` evaluates one step.

    alife train [--task 15-1] [--setting overlap] [--memory] [--step N] [--run_dir DIR] [LightningCLI args...]
    alife test --step N [--task ...] [--memory] [--run_dir DIR]

ALIFE: step 0 `base`, then per step t the ALI step (`step1`, from the step t-1 model). ALIFE-M (`--memory`) adds per
step t: the feature memory of the classes learned at t-1 extracted with the step t-1 model and joined to the older
rotated memory (`memory.pt`), class-wise rotations trained from the step t-1 to the step t feature space
(`rotations.pt`), the rotated memory (`memory_rotated.pt`) and the replay stage (`step3`). Run folder:

    DIR/step_0/{last.ckpt, results.json}
    DIR/step_t/{step1/, memory.pt, rotations.pt, memory_rotated.pt, step3/, last.ckpt, results.json}
    DIR/table.{md,csv}      old / new / all mIoU, hIoU, memory bytes vs an image memory of as many samples

A stage whose artefact exists is skipped on a rerun; an interrupted Lightning stage continues from its last.ckpt.
With no data arguments the packaged default trains a ResNet-18 on synthetic VOC-layout data (15-5 overlapped).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from cvlab_shared.cli import check_model_options, debug_enabled, fail, packaged_configs, run_cli, summary, take_debug_flag
from cvlab_shared.data.checks import InputError, check_checkpoint
from cvlab_shared.data.segmentation import LayoutError
from cvlab_shared.steps import load_results, pending_steps, save_artifact, save_step_results, step_checkpoint, step_dir, write_table
from alife.data import ALIFEDataModule
from alife.memory import FeatureMemory, MemoryFileError
from alife.module import STAGES, ALIFEModule, load_step_weights
from alife.model import build_network, classes_per_step
from alife.stages import extract_memory, train_rotations

PACKAGE = "alife"
SECTIONS = ("model", "data", "trainer")
EXTRA_COLUMNS = ("memory_bytes", "image_memory_bytes")


class DriverError(Exception):
    """A problem with the run folder or the arguments: printed as one `error:` line, exit status 2."""


def _driver_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"alife {command}", add_help=False,
        description="Run the stages of ALIFE / ALIFE-M over a class-incremental task; other arguments go to "
        f"LightningCLI (`alife {command} --help` lists them below).")
    parser.add_argument("--task", help="class schedule: 19-1, 15-5, 15-1 (VOC), 100-50, 100-10, 50-50 (ADE)")
    parser.add_argument("--setting", choices=("overlap", "disjoint"), help="default: config (overlap)")
    parser.add_argument("--memory", action="store_true", help="ALIFE-M: feature memory, rotations and replay")
    parser.add_argument("--finetune", action="store_true",
                        help="the forgetting baseline: later steps fine-tune with plain CE (no ALI, KD, MiB init)")
    parser.add_argument("--step", type=int, help="train: (re)run only this step; test: evaluate this step")
    parser.add_argument("--run_dir", type=Path, help="run folder (default runs/alife/<dataset>_<task>_<setting>_<method>)")
    parser.add_argument("--ckpt_path", help="train: resume the interrupted stage whose last.ckpt this is (in its run "
                        "folder), then run the stages after it; test: the checkpoint to evaluate")
    if command == "train":
        parser.add_argument("--base_from", type=Path, help="reuse the finished step 0 of another run folder")
    parser.add_argument("-h", "--help", action="store_true")
    return parser


def config_values(passthrough: Sequence[str]) -> dict[str, dict[str, Any]]:
    """model.*, data.* and trainer.* as a LightningCLI run will see them: default.yaml, every --config file in order,
    then --section.key=value arguments (parsed as YAML)."""
    configs = packaged_configs(PACKAGE)
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    layers: list[dict[str, Any]] = []
    if "default" in configs:
        layers.append(yaml.safe_load(configs["default"].read_text()) or {})
    items = list(passthrough)
    for i, arg in enumerate(items):
        key, value = (arg.split("=", 1) + [None])[:2] if "=" in arg else (arg, None)
        if value is None and i + 1 < len(items) and not items[i + 1].startswith("--"):
            value = items[i + 1]
        if key == "--config" and value is not None:
            path = Path(value) if Path(value).exists() else configs.get(Path(value).stem)
            if path is None:
                raise DriverError(f"config '{value}' is neither a file nor a packaged config; packaged: "
                                  f"{', '.join(sorted(configs))}")
            layers.append(yaml.safe_load(Path(path).read_text()) or {})
        elif key.startswith("--") and key[2:].split(".")[0] in SECTIONS and "." in key:
            section, name = key[2:].split(".", 1)
            layers.append({section: {name: yaml.safe_load(value) if value is not None else True}})
    for layer in layers:
        for section in SECTIONS:
            content = layer.get(section) or {}
            values[section].update(content.get("init_args", content) if isinstance(content, dict) else {})
    return values


def _defaults(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    signature = inspect.signature(cls.__init__)
    out = {k: p.default for k, p in signature.parameters.items() if k != "self"}
    out.update({k: v for k, v in given.items() if k in out})
    return out


class Run:
    """One ALIFE or ALIFE-M run over a task: its folder, its configuration and its stages."""

    def __init__(self, options: argparse.Namespace, passthrough: list[str]) -> None:
        values = config_values(passthrough)
        data = values["data"]
        for key in ("task", "setting"):
            if getattr(options, key) is not None:
                data[key] = getattr(options, key)
        self.data = _defaults(ALIFEDataModule, data)
        self.model = _defaults(ALIFEModule, values["model"])
        self.trainer = values["trainer"]
        try:
            self.datamodule = ALIFEDataModule(**self.data)
        except ValueError as error:
            raise DriverError(str(error)) from None
        self.task = self.datamodule.task
        if options.memory and getattr(options, "finetune", False):
            raise DriverError("--memory and --finetune exclude each other")
        self.memory = options.memory
        self.finetune = getattr(options, "finetune", False)
        self.passthrough = list(passthrough)
        method = "alife-m" if self.memory else ("finetune" if self.finetune else "alife")
        name = f"{self.data['dataset']}{'' if self.data['data_root'] else '-synthetic'}_{self.task.name}_" \
               f"{self.data['setting']}_{method}"
        self.dir = options.run_dir or Path("runs") / PACKAGE / name
        self.label = "ALIFE-M" if self.memory else ("fine-tuning" if self.finetune else "ALIFE")

    # -- helpers ------------------------------------------------------------------------------------------------
    def device(self) -> torch.device:
        wants_gpu = str(self.trainer.get("accelerator", "auto")) in ("gpu", "cuda", "auto")
        return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")

    def epochs(self, stage: str, step: int) -> int | None:
        if stage == "step3":
            return int(self.model["replay_epochs"])
        epochs = self.model["epochs"]
        return None if not epochs else int(epochs[min(step, len(epochs) - 1)])

    def network(self, step: int, checkpoint: Path) -> Any:
        m = self.model
        net = build_network(classes_per_step(self.task, step), m["backbone"], m["output_stride"], m["feature_channels"])
        net.load_state_dict(load_step_weights(checkpoint))
        return net.to(self.device()).eval()

    def require(self, path: Path, what: str, step: int) -> Path:
        if not path.exists():
            flag = " --memory" if self.memory else ""
            raise DriverError(f"{what} is missing: {path}; `alife train --task {self.task.name}{flag} --step {step} "
                              f"--run_dir {self.dir}` (or a full `alife train`) writes it")
        return path

    def lightning(self, command: str, stage: str, step: int, extra: Sequence[str] = (), version: str = "") -> Any:
        folder = step_dir(self.dir, step) / (stage if step > 0 else "")
        args = [command, *self.passthrough, f"--data.task={self.task.name}", f"--data.setting={self.data['setting']}",
                f"--data.step={step}", f"--model.stage={stage}", f"--checkpoint.dirpath={folder}", *extra]
        epochs = self.epochs(stage, step)
        if command == "train" and epochs is not None and not any(a.startswith("--trainer.max_epochs") for a in self.passthrough):
            args.append(f"--trainer.max_epochs={epochs}")
        if not any(a.startswith(("--logger", "--trainer.logger")) for a in self.passthrough):
            sub = f"step_{step}" + (f"/{stage}" if step > 0 else "") + (f"/{version}" if version else "")
            args += [f"--trainer.logger.save_dir={self.dir}", "--trainer.logger.name=", f"--trainer.logger.version={sub}"]
        return run_cli(ALIFEModule, ALIFEDataModule, package=PACKAGE, args=args, monitor=None)

    def fit_stage(self, stage: str, step: int, extra: Sequence[str] = ()) -> dict[str, Any] | None:
        """Run a Lightning stage unless its `done.json` exists; resume it from its last.ckpt when interrupted."""
        folder = step_dir(self.dir, step) / (stage if step > 0 else "")
        done = folder / "done.json"
        if done.exists():
            print(f"step {step} {stage}: already done ({folder}), skipped", flush=True)
            return json.loads(done.read_text())
        extra = list(extra)
        if (folder / "last.ckpt").exists():
            print(f"step {step} {stage}: resuming from {folder / 'last.ckpt'}", flush=True)
            extra.append(f"--ckpt_path={folder / 'last.ckpt'}")
        print(f"=== {self.label} {self.dir.name}: step {step}/{self.task.num_steps - 1} {stage}, classes "
              f"{self.task.new_classes(step)} ===", flush=True)
        cli = self.lightning("train", stage, step, extra)
        results = cli.model.test_results
        if cli.trainer.is_global_zero:
            done.write_text(json.dumps(results))
        return results

    # -- stages -------------------------------------------------------------------------------------------------
    def memory_stages(self, step: int) -> dict[str, Any]:
        """Memory extraction, rotation training and memory update of step t (ALIFE-M Sec. 3.2)."""
        folder, m = step_dir(self.dir, step), self.model
        previous = self.require(step_checkpoint(self.dir, step - 1), f"the step-{step - 1} model", step - 1)
        info_file = folder / "memory_info.json"
        info = json.loads(info_file.read_text()) if info_file.exists() else {}
        raw, rotated = folder / "memory.pt", folder / "memory_rotated.pt"
        classes = [0, *self.task.new_classes(0)] if step == 1 else self.task.new_classes(step - 1)
        if raw.exists():
            print(f"step {step} memory: already done ({raw}), skipped", flush=True)
        else:
            torch.manual_seed(0)
            dataset = self.datamodule.step_train_set(step - 1)
            memory, stats = extract_memory(self.network(step - 1, previous), dataset, classes, m["memory_per_class"],
                                           batch_size=self.data["batch_size"])
            if step > 1:
                older = self.require(step_dir(self.dir, step - 1) / "memory_rotated.pt", "the rotated memory of step "
                                     f"{step - 1}", step - 1)
                older_memory = FeatureMemory.load(older, self.task.num_outputs(step - 2), m["feature_channels"],
                                                  "alife train --memory")
                memory = older_memory.concat(memory)
            memory.save(raw)
            info.update(extract_seconds=stats["seconds"], extract_seconds_per_class=stats["seconds"] / len(classes),
                        redrawn=stats["redrawn"])
            print(f"step {step} memory: {len(classes)} classes x {m['memory_per_class']} in {stats['seconds']:.1f} s "
                  f"({stats['seconds'] / len(classes):.2f} s per class)", flush=True)
        memory = FeatureMemory.load(raw, self.task.num_outputs(step - 1), m["feature_channels"], "alife train --memory")
        theta = folder / "rotations.pt"
        if theta.exists():
            print(f"step {step} rotations: already done ({theta}), skipped", flush=True)
        else:
            current = self.require(folder / "step1" / "last.ckpt", f"the step-{step} ALIFE-S1 checkpoint", step)
            torch.manual_seed(0)
            rotation, stats = train_rotations(
                self.network(step - 1, previous), self.network(step, current), memory, self.datamodule_for(step),
                epochs=m["rotation_epochs"], lr=m["rotation_lr"], weight_decay=m["rotation_weight_decay"],
                lam=m["rotation_lambda"], temperature=m["rotation_temperature"], batch_size=self.data["batch_size"])
            save_artifact({"theta": rotation.theta.detach().cpu()}, theta)
            info.update(rotation_seconds=stats["seconds"], rotation_seconds_per_class=stats["seconds"] / memory.num_classes,
                        rotation_loss_first=stats["loss_first"], rotation_loss_last=stats["loss_last"])
            print(f"step {step} rotations: {memory.num_classes} classes in {stats['seconds']:.1f} s, loss "
                  f"{stats['loss_first']:.4f} -> {stats['loss_last']:.4f}", flush=True)
        if not rotated.exists():
            stored = torch.load(theta, map_location="cpu", weights_only=True)["theta"]
            from alife.rotation import CayleyRotation

            rotation = CayleyRotation(memory.num_classes, memory.dim)
            with torch.no_grad():
                rotation.theta.copy_(stored)
            memory.rotated(rotation).save(rotated)
        info.update(memory_bytes=memory.nbytes, image_memory_bytes=self.image_bytes(memory))
        info_file.write_text(json.dumps(info, indent=1))
        print(f"step {step} memory: {memory.num_classes} classes x {memory.per_class} features of {memory.dim} floats = "
              f"{memory.nbytes / 2**20:.2f} MiB; an image replay memory of as many samples: "
              f"{info['image_memory_bytes'] / 2**20:.2f} MiB", flush=True)
        return info

    def datamodule_for(self, step: int) -> Any:
        return ALIFEDataModule(**{**self.data, "step": step}).step_train_set(step)

    def image_bytes(self, memory: FeatureMemory) -> int:
        """What SSUL/DKD-M-style image replay of as many samples stores: samples x the mean bytes of one training
        image and its mask as files on disk."""
        samples, _ = self.datamodule.samples()
        sizes = [s.image.stat().st_size + s.mask.stat().st_size for s in samples]
        return int(round(memory.num_classes * memory.per_class * sum(sizes) / len(sizes)))

    def train_step(self, step: int) -> None:
        folder = step_dir(self.dir, step)
        if step == 0:
            results = self.fit_stage("base", 0)
            extra: dict[str, Any] = {"memory_bytes": 0 if self.memory else None, "image_memory_bytes": None}
        else:
            previous = self.require(step_checkpoint(self.dir, step - 1), f"the step-{step - 1} model", step - 1)
            first = "finetune" if self.finetune else "step1"
            results = self.fit_stage(first, step, [f"--model.previous_checkpoint={previous}"])
            extra = {"memory_bytes": None, "image_memory_bytes": None}
            final = folder / first / "last.ckpt"
            if self.memory:
                info = self.memory_stages(step)
                results = self.fit_stage("step3", step, [
                    f"--model.previous_checkpoint={previous}",
                    f"--model.init_checkpoint={final}",
                    f"--model.memory={folder / 'memory_rotated.pt'}",
                ])
                final = folder / "step3" / "last.ckpt"
                extra = info
            temporary = folder / ".last.ckpt.tmp"
            shutil.copyfile(final, temporary)
            temporary.replace(step_checkpoint(self.dir, step))
        if step == 0:
            self._promote_base()
        save_step_results(self.dir, step, self.task.new_classes(step), {**results, **extra, "method": self.label})
        self.print_table()

    def adopt_base(self, other: Path) -> None:
        """Start from the finished step 0 of another run folder of the same task (one base for several methods)."""
        source = step_dir(other, 0)
        self.require(source / "done.json", "the base stage of --base_from", 0)
        target = step_dir(self.dir, 0)
        if not (target / "done.json").exists():
            target.mkdir(parents=True, exist_ok=True)
            for name in ("last.ckpt", "done.json"):
                shutil.copyfile(source / name, target / name)
            print(f"step 0: base taken from {source}", flush=True)

    def _promote_base(self) -> None:
        """Step 0 trains directly in step_0/, whose last.ckpt is already the step's checkpoint."""
        self.require(step_checkpoint(self.dir, 0), "the base checkpoint", 0)

    def print_table(self) -> None:
        print(f"\n{self.label} {self.dir.name}: per-step old / new / all mIoU and hIoU (%), memory bytes\n", flush=True)
        print(write_table(self.dir, load_results(self.dir), EXTRA_COLUMNS), flush=True)
        print(f"saved {self.dir / 'table.md'} and {self.dir / 'table.csv'}", flush=True)


def _check_inputs(run: Run, stage: str, options: argparse.Namespace) -> Path | None:
    """Before any model is built or anything is written: weights and checkpoint options, the data root's layout and
    a given checkpoint."""
    if stage == "fit":
        check_model_options(dict(run.model))
    run.datamodule.check_data(stage)
    return None if options.ckpt_path is None else check_checkpoint(options.ckpt_path)


def _stage_run_dir(checkpoint: Path) -> Path:
    """The run folder of a stage's `last.ckpt`: `RUN/step_0/last.ckpt` or `RUN/step_N/<stage>/last.ckpt`."""
    folder = checkpoint.expanduser().absolute().parent
    if re.fullmatch(r"step_0", folder.name):
        return folder.parent
    if folder.name in STAGES and re.fullmatch(r"step_\d+", folder.parent.name):
        return folder.parent.parent
    raise InputError(f"--ckpt_path {checkpoint}: expected a stage checkpoint <run_dir>/step_0/last.ckpt or "
                     f"<run_dir>/step_N/<{'|'.join(s for s in STAGES if s != 'base')}>/last.ckpt")


def train(options: argparse.Namespace, passthrough: list[str]) -> None:
    run = Run(options, passthrough)
    checkpoint = _check_inputs(run, "fit", options)
    if checkpoint is not None:
        # every interrupted stage resumes from its own last.ckpt: the checkpoint names the run folder
        where = _stage_run_dir(checkpoint)
        if options.run_dir is not None and where.resolve() != options.run_dir.expanduser().resolve():
            raise InputError(f"--ckpt_path {checkpoint} is not in --run_dir {options.run_dir}; expected "
                             f"{options.run_dir}/step_N/.../last.ckpt")
        run.dir = options.run_dir or where
    if options.base_from is not None:
        run.adopt_base(options.base_from)
    try:
        steps = pending_steps(run.dir, run.task.num_steps, options.step)
    except ValueError as error:
        raise DriverError(str(error)) from None
    for step in range(run.task.num_steps):
        if step not in steps and options.step is None:
            print(f"step {step} already done ({step_dir(run.dir, step)}): skipped", flush=True)
    for step in steps:
        run.train_step(step)


def test(options: argparse.Namespace, passthrough: list[str]) -> None:
    run = Run(options, passthrough)
    checkpoint = _check_inputs(run, "test", options)
    step = run.task.num_steps - 1 if options.step is None else options.step
    if not 0 <= step < run.task.num_steps:
        raise DriverError(f"task {run.task.name} has steps 0..{run.task.num_steps - 1}, got {step}")
    extra = []
    if checkpoint is not None:
        extra.append(f"--ckpt_path={checkpoint}")
    else:
        extra.append(f"--ckpt_path={run.require(step_checkpoint(run.dir, step), f'the step-{step} model', step)}")
    cli = run.lightning("test", "base" if step == 0 else "step1", step, extra, version="test")
    if cli.trainer.is_global_zero:
        r = cli.model.test_results
        new = "-" if r["new"] is None else f"{r['new']:.2f}"
        hiou = "-" if r["hiou"] is None else f"{r['hiou']:.2f}"
        print(f"step {step}: old {r['old']:.2f}  new {new}  all {r['all']:.2f}  hIoU {hiou}")


USAGE = ("usage: alife {train,test} [--task T] [--setting S] [--memory] [--step N] [--run_dir DIR] [LightningCLI args]\n"
         "  train  run every stage of every step (ALIFE; ALIFE-M with --memory)\n"
         "  test   evaluate a step's model\n"
         "  alife train --help lists all options")


def main(args: Sequence[str] | None = None) -> None:
    """The `alife` command; input errors are one `error:` line with exit status 2, as in every package."""
    argv = take_debug_flag(list(sys.argv[1:] if args is None else args))
    if not argv or argv[0] not in ("train", "test"):
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(USAGE, file=sys.stdout if asked else sys.stderr)
        raise SystemExit(0 if asked else 2)
    command = argv[0]
    parser = _driver_parser(command)
    options, passthrough = parser.parse_known_args(argv[1:])
    if options.help:
        print(summary(PACKAGE, command, ALIFEDataModule, test_example="test --step 1   # a step of the run folder under runs/alife/"), flush=True)
        parser.print_help()
        print("\nLightningCLI arguments of each stage:\n", flush=True)
        run_cli(ALIFEModule, ALIFEDataModule, package=PACKAGE, args=[command, "--help"], monitor=None, show_summary=False)
        return
    try:
        (train if command == "train" else test)(options, passthrough)
    except (DriverError, MemoryFileError, InputError, LayoutError) as error:
        if debug_enabled():
            raise
        fail(error)
