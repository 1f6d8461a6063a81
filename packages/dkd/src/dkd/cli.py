"""`dkd train` runs every step of a class-incremental task in order; `dkd test` evaluates one step's checkpoint.

    dkd train --task 15-1 --setting overlap [--step N] [--ckpt_path FILE] [--run_dir DIR] [LightningCLI args...]

Each step is one LightningCLI `train` run (`cvlab_shared.cli.run_cli`) whose model starts from the previous step's
last checkpoint; steps write `DIR/step_N/{last.ckpt, metrics.csv, config.yaml, results.json}` and, after every step,
`DIR/table.{md,csv}` (old/new/all mIoU and hIoU per step). Finished steps are skipped when the run is restarted;
`--step N` (re)runs step N alone; `--ckpt_path DIR/step_N/last.ckpt` resumes the interrupted step N exactly (as in
every package) and then runs the steps after it (`--resume` is the same, for the first unfinished step).
The task, setting and data options come from LightningCLI's own merging of the config files and arguments.
With no data arguments the packaged default config trains a ResNet-18 on synthetic VOC-layout data (15-5 task).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from cvlab_shared.cli import debug_enabled, fail, parse_config, run_cli, summary, take_debug_flag
from cvlab_shared.data.checks import InputError, check_checkpoint, verify_images
from cvlab_shared.steps import load_results, save_step_results, step_checkpoint, step_dir, write_table
from dkd.data import DKDDataModule
from dkd.module import DKDModule

PACKAGE = "dkd"
STEP_FIELDS = ("task", "setting", "dataset", "data_root")


def _driver_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"dkd {command}",
        add_help=False,
        description="Run the steps of a class-incremental task; other arguments go to LightningCLI "
        f"(`dkd {command} --help` lists them below).",
    )
    parser.add_argument("--task", help="class schedule, e.g. 15-1, 15-5, 19-1 (VOC), 100-50 (ADE); default: config")
    parser.add_argument("--setting", choices=("overlap", "disjoint"), help="default: config")
    parser.add_argument("--step", type=int, help="run only this step (train) / evaluate this step (test)")
    parser.add_argument("--run_dir", type=Path, help="run folder (default runs/dkd/<dataset>_<task>_<setting>)")
    parser.add_argument("--ckpt_path", help="train: resume the step whose last.ckpt this is; test: the checkpoint")
    if command == "train":
        parser.add_argument("--resume", action="store_true", help="same as --ckpt_path of the first unfinished step")
    parser.add_argument("-h", "--help", action="store_true")
    return parser


def _config_values(passthrough: Sequence[str]) -> dict[str, object]:
    """data.{task, setting, dataset, data_root} as the LightningCLI run will see them (LightningCLI's own merging of
    defaults, default.yaml, every --config in order and the --data.X arguments)."""
    config = parse_config(DKDModule, DKDDataModule, PACKAGE, passthrough)
    return {k: config.data[k] for k in STEP_FIELDS}


def _step_args(
    values: dict[str, object], step: int, run_dir: Path, passthrough: Sequence[str], version: str = ""
) -> list[str]:
    """The LightningCLI arguments of one step: task, setting and step for the datamodule, checkpoint and log folders
    (`step_N`, or `step_N/<version>` for evaluations, so that they do not overwrite the training logs)."""
    args = [
        *passthrough,
        f"--data.task={values['task']}",
        f"--data.setting={values['setting']}",
        f"--data.step={step}",
        f"--checkpoint.dirpath={step_dir(run_dir, step)}",
    ]
    if not any(a == "--logger" or a.startswith("--logger=") or a.startswith("--trainer.logger") for a in passthrough):
        args += [
            f"--trainer.logger.save_dir={run_dir}",
            "--trainer.logger.name=",
            f"--trainer.logger.version=step_{step}{'/' + version if version else ''}",
        ]
    return args


def check_data(datamodule: DKDDataModule, stage: str = "fit") -> None:
    """Before any model is built: a given data_root must hold the VOC / ADE layout (read-only; the synthetic default
    is written later, in prepare_data)."""
    if datamodule.data_root is not None:
        train, val = datamodule.samples()  # reads the official lists; names the missing file and the expected layout
        if datamodule.hparams.verify:
            verify_images(path for sample in [*train, *val] for path in (sample.image, sample.mask))


def _task(values: dict[str, object]):
    return DKDDataModule(values["dataset"], values["data_root"], values["task"], values["setting"]).task


def _record(cli, run_dir: Path, step: int, classes: list[int]) -> None:
    if not cli.trainer.is_global_zero:
        return
    save_step_results(run_dir, step, classes, cli.model.test_results)
    print(f"\nDKD {run_dir.name}: per-step old / new / all mIoU and hIoU (%)\n", flush=True)
    print(write_table(run_dir, load_results(run_dir)), flush=True)
    print(f"saved {run_dir / 'table.md'} and {run_dir / 'table.csv'}", flush=True)


def _resume_point(options: argparse.Namespace, run_dir: Path, num_steps: int) -> tuple[int, Path] | None:
    """(step, checkpoint) to resume: `--ckpt_path .../step_N/last.ckpt`, or `--resume` (first unfinished step)."""
    if options.ckpt_path:
        path = check_checkpoint(options.ckpt_path)
        match = re.fullmatch(r"step_(\d+)", path.parent.name)
        if match is None or int(match.group(1)) >= num_steps:
            raise InputError(f"--ckpt_path {path}: expected a step checkpoint <run_dir>/step_N/last.ckpt")
        return int(match.group(1)), path
    if options.resume:
        for step in range(num_steps):
            if not (step_dir(run_dir, step) / "results.json").exists():
                ckpt = step_checkpoint(run_dir, step)
                return (step, ckpt) if ckpt.exists() else None
    return None


def train(options: argparse.Namespace, passthrough: list[str], values: dict[str, object], run_dir: Path) -> None:
    task = _task(values)
    resume = _resume_point(options, run_dir, task.num_steps)
    if resume is not None and options.run_dir is None:
        run_dir = resume[1].parent.parent
    steps = [options.step] if options.step is not None else list(range(task.num_steps))
    if resume is not None and options.step is None:
        steps = [s for s in steps if s >= resume[0]]
    for step in steps:
        if options.step is None and (step_dir(run_dir, step) / "results.json").exists():
            print(f"step {step} already done ({step_dir(run_dir, step)}): skipped", flush=True)
            continue
        args = ["train", *_step_args(values, step, run_dir, passthrough)]
        if step > 0:
            previous = step_checkpoint(run_dir, step - 1)
            if not previous.exists():
                raise InputError(f"step {step} needs the checkpoint of step {step - 1}: {previous} is missing")
            args.append(f"--model.previous_checkpoint={previous}")
        if resume is not None and resume[0] == step:
            args.append(f"--ckpt_path={resume[1]}")
        print(f"=== {run_dir.name}: step {step}/{task.num_steps - 1}, classes {task.new_classes(step)} ===", flush=True)
        cli = run_cli(DKDModule, DKDDataModule, package=PACKAGE, args=args, monitor=None, check_data=check_data)
        _record(cli, run_dir, step, task.new_classes(step))


def test(options: argparse.Namespace, passthrough: list[str], values: dict[str, object], run_dir: Path) -> None:
    task = _task(values)
    step = task.num_steps - 1 if options.step is None else options.step
    args = ["test", *_step_args(values, step, run_dir, passthrough, version="test")]
    saved = step_dir(run_dir, step) / "config.yaml"
    if "--config" not in passthrough and saved.exists():
        args = ["test", f"--config={saved}", *args[1:]]
    if options.ckpt_path:
        args.append(f"--ckpt_path={options.ckpt_path}")
    else:
        checkpoint = step_checkpoint(run_dir, step)
        if not checkpoint.exists():
            raise InputError(f"no checkpoint of step {step} at {checkpoint}; pass --ckpt_path or --run_dir")
        args.append(f"--ckpt_path={checkpoint}")
    cli = run_cli(DKDModule, DKDDataModule, package=PACKAGE, args=args, monitor=None, check_data=check_data)
    if cli.trainer.is_global_zero:
        r = cli.model.test_results
        print(f"step {step}: old {r['old']:.2f}  new {r['new']:.2f}  all {r['all']:.2f}  hIoU {r['hiou']:.2f}")


def main(args: Sequence[str] | None = None) -> None:
    """The `dkd` command; input errors are one `error:` line with exit status 2, as in every package."""
    argv = take_debug_flag(list(sys.argv[1:] if args is None else args))
    try:
        _main(argv)
    except (KeyboardInterrupt, SystemExit):
        raise
    except InputError as exc:
        if debug_enabled():
            raise
        fail(exc)


def _main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("train", "test"):
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print("usage: dkd {train,test} [--task T] [--setting S] [--step N] [--run_dir DIR] [LightningCLI args]\n"
              "  train  run every step of a class-incremental task in order (each step starts from the previous one)\n"
              "  test   evaluate a step's checkpoint\n"
              "  dkd train --help lists all options", file=sys.stdout if asked else sys.stderr)
        raise SystemExit(0 if asked else 2)
    command = argv[0]
    parser = _driver_parser(command)
    options, passthrough = parser.parse_known_args(argv[1:])
    if options.help:
        print(summary(PACKAGE, command, DKDDataModule, test_example="test --step 1   # a step of the run folder runs/dkd/<dataset>_<task>_<setting>"), flush=True)
        parser.print_help()
        print("\nLightningCLI arguments of each step:\n", flush=True)
        run_cli(DKDModule, DKDDataModule, package=PACKAGE, args=[command, "--help"], monitor=None, show_summary=False)
        return
    values = _config_values(passthrough)
    values.update({k: v for k, v in (("task", options.task), ("setting", options.setting)) if v is not None})
    name = f"{values['dataset']}{'' if values['data_root'] else '-synthetic'}_{values['task']}_{values['setting']}"
    run_dir = options.run_dir or Path("runs") / PACKAGE / name
    (train if command == "train" else test)(options, passthrough, values, run_dir)
