"""`bpcl-uda train`: source-only training, then the self-training rounds with BPCL; `bpcl-uda test` evaluates.

    bpcl-uda train [--rounds N] [--round R] [--run_dir DIR] [--ckpt_path FILE] [--plot] [LightningCLI args...]
    bpcl-uda test [--stage source_only|round_R] [--run_dir DIR] [--ckpt_path FILE] [LightningCLI args...]

Stages are LightningCLI `train` runs (`cvlab_shared.cli.run_cli`) in `DIR/source_only` and `DIR/round_R`, each keeping
the checkpoint best on target validation (`best.ckpt`) and its `results.json` (per-class IoU, mIoU19/16/13). Before
round R the best model of the previous stage writes the round's pseudo labels (`DIR/round_R/pseudo_labels`); the
learning rate halves per round. Finished stages are skipped when the command runs again; `--round R` (re)runs round
R alone. The end prints source-only vs adapted IoU per class (`DIR/table.md`); `--plot` saves target val images with
their labels and the predictions before and after adaptation (`DIR/predictions.png`).

Every stage also keeps `last.ckpt` (after every epoch): `bpcl-uda train --ckpt_path DIR/<stage>/last.ckpt` resumes
that interrupted stage exactly (per-epoch reseeding, prototypes and optimiser from the checkpoint) and runs the later
stages. Inputs (data roots, checkpoints) are checked before any model is built; a problem is one `error:` line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from bpcl_uda.data import BPCLDataModule
from bpcl_uda.module import BPCLModule
from bpcl_uda.pseudo_labels import pseudo_label_dir, write_pseudo_labels
from cvlab_shared.cli import (
    check_model_options,
    debug_enabled,
    fail,
    packaged_configs,
    parse_config,
    run_cli,
    summary,
    take_debug_flag,
)
from cvlab_shared.data.checks import InputError, check_checkpoint
from cvlab_shared.data.segmentation import CITYSCAPES_CLASSES, LayoutError
from cvlab_shared.metrics.uda import MIOU16_CLASSES

PACKAGE = "bpcl_uda"
FIELDS = {"data": ("source", "source_root", "target_root"), "model": ("rounds", "source_only_epochs")}


def stage_dir(run_dir: Path, stage: str) -> Path:
    return run_dir / stage


def best_checkpoint(run_dir: Path, stage: str) -> Path:
    return stage_dir(run_dir, stage) / "best.ckpt"


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"bpcl-uda {command}",
        add_help=False,
        description="Other arguments go to LightningCLI (listed below with --help).",
    )
    parser.add_argument("--run_dir", type=Path, help="run folder (default runs/bpcl-uda/<source>[-synthetic])")
    parser.add_argument(
        "--ckpt_path", help="train: resume the stage whose last.ckpt this is (DIR/<stage>/last.ckpt); test: evaluate it"
    )
    if command == "train":
        parser.add_argument("--rounds", type=int, help="self-training rounds (default: the config's model.rounds)")
        parser.add_argument(
            "--round", type=int, help="(re)run only this round; its pseudo labels come from the previous stage"
        )
        parser.add_argument("--plot", action="store_true", help="save target images, labels, predictions before/after")
    else:
        parser.add_argument("--stage", help="source_only or round_R (default: the last finished stage)")
    parser.add_argument("-h", "--help", action="store_true")
    return parser


def config_values(passthrough: Sequence[str]) -> dict[str, object]:
    """data.source/source_root/target_root and model.rounds as the LightningCLI runs will see them."""
    configs = packaged_configs(PACKAGE)
    values: dict[str, object] = {
        "source": "gta5",
        "source_root": None,
        "target_root": None,
        "rounds": 10,
        "source_only_epochs": None,
    }
    files: list[object] = [configs["default"]] if "default" in configs else []
    items = list(passthrough)
    keys = {f"--{group}.{f}" for group, fields in FIELDS.items() for f in fields}
    for i, arg in enumerate(items):
        value = items[i + 1] if (arg == "--config" or arg in keys) and i + 1 < len(items) else None
        if "=" in arg:
            arg, value = arg.split("=", 1)
        if arg == "--config" and value is not None:
            files.append(Path(value) if Path(value).exists() else configs.get(Path(value).stem, Path(value)))
        elif arg in keys:
            group, field = arg[2:].split(".", 1)
            files.append({group: {field: yaml.safe_load(value) if value is not None else None}})
    for item in files:
        content = item if isinstance(item, dict) else (yaml.safe_load(Path(item).read_text()) or {})
        for group, fields in FIELDS.items():
            section = content.get(group) or {}
            section = section.get("init_args", section)
            values.update({k: section[k] for k in fields if k in section})
    return values


def _stage_args(passthrough: Sequence[str], run_dir: Path, stage: str, version: str = "") -> list[str]:
    args = [*passthrough, f"--checkpoint.dirpath={stage_dir(run_dir, stage)}", "--checkpoint.filename=best"]
    if not any(a == "--logger" or a.startswith(("--logger=", "--trainer.logger")) for a in passthrough):
        args += [
            f"--trainer.logger.save_dir={run_dir}",
            "--trainer.logger.name=",
            f"--trainer.logger.version={stage}{'/' + version if version else ''}",
        ]
    return args


def _record(cli, run_dir: Path, stage: str) -> None:
    """A finished stage keeps best.ckpt (it feeds the next stage) and results.json; its last.ckpt, only needed to
    resume the stage, is removed (so the run folder holds one last.ckpt: the interrupted stage's)."""
    if cli.trainer.is_global_zero:
        (stage_dir(run_dir, stage) / "results.json").write_text(json.dumps(cli.model.test_results, indent=1))
        (stage_dir(run_dir, stage) / "last.ckpt").unlink(missing_ok=True)


def load_stage(run_dir: Path, stage: str) -> BPCLModule:
    """The best model of a finished stage (a checkpoint this tool wrote: trusted)."""
    path = best_checkpoint(run_dir, stage)
    if not path.exists():
        raise FileNotFoundError(f"no best checkpoint of stage {stage}: {path} is missing (run that stage first)")
    return BPCLModule.load_from_checkpoint(path, map_location="cpu", weights_only=False).eval()


@torch.no_grad()
def predict_dataset(model: BPCLModule, dataset, batch_size: int = 4):
    """(confidence, prediction) at label resolution for every image of `dataset`, in order."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for image, label in loader:
        prob = torch.softmax(model.predict_full(image, label.shape[-2:]), dim=1)
        confidence, prediction = prob.max(dim=1)
        yield from zip(confidence, prediction)


def make_pseudo_labels(run_dir: Path, round_index: int, datamodule: BPCLDataModule) -> None:
    """Round `round_index`'s pseudo labels from the best model of the previous stage."""
    folder = pseudo_label_dir(run_dir, round_index)
    if (folder / "done").exists():
        return
    previous = "source_only" if round_index == 0 else f"round_{round_index - 1}"
    if not best_checkpoint(run_dir, previous).exists():
        raise FileNotFoundError(
            f"round {round_index} needs the pseudo labels of the {previous} model: {best_checkpoint(run_dir, previous)} "
            f"is missing (run {'the source-only stage' if round_index == 0 else f'round {round_index - 1}'} first)"
        )
    model = load_stage(run_dir, previous)
    dataset = datamodule.target_train_eval_set()
    names = [s.name for s in datamodule.target_train_samples]
    h = model.hparams
    stats = write_pseudo_labels(
        folder,
        names,
        predict_dataset(model, dataset),
        h.num_classes,
        h.class_proportion,
        h.image_proportion,
        datamodule.excluded_classes,
    )
    print(
        f"round {round_index}: pseudo labels from the {previous} model in {folder} "
        f"({100 * stats['labelled_share']:.1f}% of target pixels labelled)",
        flush=True,
    )


def per_class_table(results: dict[str, dict]) -> str:
    """Markdown table of per-class IoU (%) for each stage, then mIoU19 / mIoU16 / mIoU13."""
    stages = list(results)
    lines = ["| class | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
    for index, name in enumerate(CITYSCAPES_CLASSES):
        mark = "" if index in MIOU16_CLASSES else " (not in SYNTHIA)"
        lines.append(f"| {name}{mark} | " + " | ".join(f"{results[s]['per_class'][name]:.2f}" for s in stages) + " |")
    for key in ("mIoU19", "mIoU16", "mIoU13"):
        lines.append(f"| **{key}** | " + " | ".join(f"{results[s][key]:.2f}" for s in stages) + " |")
    return "\n".join(lines) + "\n"


def plot_before_after(run_dir: Path, stages: Sequence[str], datamodule: BPCLDataModule, count: int = 4) -> Path:
    """Target val images | labels | prediction of each stage, one row per image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cvlab_shared.data.seg_transforms import denormalize
    from cvlab_shared.data.segmentation import CITYSCAPES_PALETTE
    from cvlab_shared.visualize.segmentation import colorize

    palette = torch.zeros(256, 3, dtype=torch.uint8).numpy()
    palette[:19] = CITYSCAPES_PALETTE
    datamodule.setup("test")
    images, labels = zip(*(datamodule.val_set[i] for i in range(min(count, len(datamodule.val_set)))))
    models = [load_stage(run_dir, s) for s in stages]
    figure = Figure(figsize=(3 * (2 + len(stages)), 1.8 * len(images) + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(images), 2 + len(stages), squeeze=False)
    for row, (image, label) in enumerate(zip(images, labels, strict=True)):
        with torch.no_grad():
            preds = [m.predict_full(image[None], label.shape[-2:])[0].argmax(0) for m in models]
        picture = torch.nn.functional.interpolate(denormalize(image)[None], size=label.shape, mode="bilinear")[0]
        panels = [picture.permute(1, 2, 0).numpy(), colorize(label, palette), *(colorize(p, palette) for p in preds)]
        for column, (panel, title) in enumerate(zip(panels, ["target image", "label", *stages], strict=True)):
            axes[row, column].imshow(panel, interpolation="nearest")
            axes[row, column].set_axis_off()
            if row == 0:
                axes[row, column].set_title(title)
    figure.tight_layout()
    path = run_dir / "predictions.png"
    figure.savefig(path)
    return path


def _datamodule(passthrough: Sequence[str]) -> BPCLDataModule:
    """The datamodule as the stage runs will build it (for input checks, pseudo labels and plots); no model."""
    config = parse_config(BPCLModule, BPCLDataModule, PACKAGE, list(passthrough))
    data = config.data
    return BPCLDataModule(**(data.as_dict() if hasattr(data, "as_dict") else dict(data)))


def _resume_point(options: argparse.Namespace, rounds: int) -> tuple[str, Path] | None:
    """(stage, checkpoint) to resume from `--ckpt_path DIR/<stage>/last.ckpt`, checked before anything runs."""
    if not options.ckpt_path:
        return None
    path = check_checkpoint(options.ckpt_path)
    stage = path.parent.name
    match = re.fullmatch(r"round_(\d+)", stage)
    if not (stage == "source_only" or (match is not None and int(match.group(1)) < rounds)):
        raise InputError(
            f"--ckpt_path {path}: expected a stage checkpoint <run_dir>/source_only/last.ckpt or "
            f"<run_dir>/round_R/last.ckpt (R < {rounds})"
        )
    if (path.parent / "results.json").exists():
        raise InputError(
            f"--ckpt_path {path}: stage {stage} is finished ({path.parent / 'results.json'}); expected the last.ckpt "
            "of an interrupted stage (`bpcl-uda train --run_dir <run>` alone runs the stages still missing)"
        )
    if options.round is not None and stage != f"round_{options.round}":
        raise InputError(f"--ckpt_path {path} belongs to stage {stage}, not to --round {options.round}")
    return stage, path


def train(options: argparse.Namespace, passthrough: list[str], values: dict[str, object], run_dir: Path) -> None:
    rounds = options.rounds if options.rounds is not None else int(values["rounds"])
    resume = _resume_point(options, rounds)
    if resume is not None and options.run_dir is None:
        run_dir = resume[1].parent.parent
    check_model_options(parse_config(BPCLModule, BPCLDataModule, PACKAGE, list(passthrough)).model)
    datamodule = _datamodule(passthrough)
    datamodule.check_data("fit")  # before any model: one error line, nothing written
    stages = ["source_only"] if options.round is None else []
    stages += [f"round_{r}" for r in ([options.round] if options.round is not None else range(rounds))]
    if resume is not None:
        stages = stages[stages.index(resume[0]) :]
    for stage in stages:
        if options.round is None and (stage_dir(run_dir, stage) / "results.json").exists():
            print(f"{stage} already done ({stage_dir(run_dir, stage)}): skipped", flush=True)
            continue
        args = ["train", *_stage_args(passthrough, run_dir, stage)]
        if stage == "source_only":
            args.append("--model.stage=source_only")
            if values["source_only_epochs"] is not None:
                args.append(f"--trainer.max_epochs={values['source_only_epochs']}")
        else:
            r = int(stage.split("_")[1])
            make_pseudo_labels(run_dir, r, datamodule)
            previous = "source_only" if r == 0 else f"round_{r - 1}"
            args += [
                "--model.stage=adapt",
                f"--model.round_index={r}",
                f"--model.init_checkpoint={best_checkpoint(run_dir, previous)}",
                f"--data.pseudo_label_dir={pseudo_label_dir(run_dir, r)}",
                f"--data.pseudo_round={r}",
            ]
        if resume is not None and stage == resume[0]:
            args.append(f"--ckpt_path={resume[1]}")
        print(f"=== {run_dir.name}: {stage} ===", flush=True)
        _record(run_cli(BPCLModule, BPCLDataModule, package=PACKAGE, args=args, monitor="val/mIoU19"), run_dir, stage)
    done = ["source_only"] + [f"round_{r}" for r in range(rounds)]
    results = {
        s: json.loads((stage_dir(run_dir, s) / "results.json").read_text())
        for s in done
        if (stage_dir(run_dir, s) / "results.json").exists()
    }
    if results:
        table = per_class_table(results)
        (run_dir / "table.md").write_text(table)
        print(
            f"\nBPCL {values['source']} -> cityscapes, target val IoU (%) per class and stage:\n\n{table}", flush=True
        )
        print(f"saved {run_dir / 'table.md'}", flush=True)
    if options.plot and len(results) >= 2:
        shown = ["source_only", list(results)[-1]]
        print(f"saved {plot_before_after(run_dir, shown, datamodule)}", flush=True)


def test(options: argparse.Namespace, passthrough: list[str], values: dict[str, object], run_dir: Path) -> None:
    finished = sorted((p.parent.name for p in run_dir.glob("*/best.ckpt")), key=lambda s: (s != "source_only", s))
    stage = options.stage or (finished[-1] if finished else "source_only")
    args = ["test", *_stage_args(passthrough, run_dir, stage, version="test")]
    if options.ckpt_path:
        args.append(f"--ckpt_path={options.ckpt_path}")  # checked by the core CLI before anything is built
    else:
        checkpoint = best_checkpoint(run_dir, stage)
        if not checkpoint.exists():
            raise InputError(f"no checkpoint of stage {stage} at {checkpoint}; pass --ckpt_path or --run_dir")
        args.append(f"--ckpt_path={checkpoint}")
    cli = run_cli(BPCLModule, BPCLDataModule, package=PACKAGE, args=args, monitor="val/mIoU19")
    if cli.trainer.is_global_zero:
        print(per_class_table({stage: cli.model.test_results}), flush=True)


def main(args: Sequence[str] | None = None) -> None:
    """The `bpcl-uda` command; input errors are one `error:` line with exit status 2, as in every package."""
    argv = take_debug_flag(list(sys.argv[1:] if args is None else args))
    try:
        _main(argv)
    except (KeyboardInterrupt, SystemExit):
        raise
    except (InputError, LayoutError, FileNotFoundError) as error:
        if debug_enabled():
            raise
        fail(error)


def _main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("train", "test"):
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(
            "usage: bpcl-uda {train,test} [--run_dir DIR] [--rounds N] [--round R] [--ckpt_path FILE] [--plot] "
            "[LightningCLI args]\n"
            "  train  source-only training, then the BPCL self-training rounds\n"
            "  test   evaluate a stage's best checkpoint on the target validation set\n"
            "  bpcl-uda train --help lists all options",
            file=sys.stdout if asked else sys.stderr,
        )
        raise SystemExit(0 if asked else 2)
    command = argv[0]
    parser = _parser(command)
    options, passthrough = parser.parse_known_args(argv[1:])
    if options.help:
        print(summary(PACKAGE, command, BPCLDataModule, test_example="test --stage round_0   # a stage of the run folder under runs/bpcl-uda/"), flush=True)
        parser.print_help()
        print("\nLightningCLI arguments of each stage:\n", flush=True)
        run_cli(BPCLModule, BPCLDataModule, package=PACKAGE, args=[command, "--help"], monitor="val/mIoU19", show_summary=False)
        return
    values = config_values(passthrough)
    name = f"{values['source']}{'' if values['source_root'] else '-synthetic'}"
    run_dir = options.run_dir or Path("runs") / "bpcl-uda" / name
    (train if command == "train" else test)(options, passthrough, values, run_dir)
