"""The run folder of a multi-step (class-incremental) run: one sub-folder per step, each step's results, the table.

Layout (used by the DKD and ALIFE drivers; ALIFE adds per-stage artefacts inside the step folders)::

    RUN/step_N/last.ckpt        the checkpoint that feeds step N + 1
    RUN/step_N/results.json     old / new / all mIoU, hIoU, per-class IoU (percent) and any extra columns
    RUN/table.{md,csv}          one row per finished step

A step whose `results.json` exists is finished: `pending_steps` leaves it out of a rerun, so an interrupted run
continues where it stopped. Stages inside a step (checkpoints, memory files) use `stage_done` the same way: an
artefact is written to a temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

BASE_COLUMNS = ("step", "classes", "old", "new", "all", "hIoU")
RESULT_KEYS = {"old": "old", "new": "new", "all": "all", "hIoU": "hiou"}


def step_dir(run_dir: Path, step: int) -> Path:
    """`RUN/step_N`."""
    return Path(run_dir) / f"step_{step}"


def step_checkpoint(run_dir: Path, step: int) -> Path:
    """The checkpoint that feeds step + 1 (the last epoch, as in the official codes)."""
    return step_dir(run_dir, step) / "last.ckpt"


def step_done(run_dir: Path, step: int) -> bool:
    """True when step N wrote its results (it finished)."""
    return (step_dir(run_dir, step) / "results.json").exists()


def pending_steps(run_dir: Path, num_steps: int, only: int | None = None) -> list[int]:
    """The steps a run still has to do: all unfinished steps in order, or exactly `only` (rerun) when given."""
    if only is not None:
        if not 0 <= only < num_steps:
            raise ValueError(f"step must be in 0..{num_steps - 1}, got {only}")
        return [only]
    return [step for step in range(num_steps) if not step_done(run_dir, step)]


def save_step_results(run_dir: Path, step: int, classes: Sequence[int], results: dict[str, Any]) -> Path:
    """Write `step_N/results.json` (old/new/all mIoU, hIoU, per-class IoU, extra columns) and return its path."""
    path = step_dir(run_dir, step) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"step": step, "classes": list(classes), **results}, indent=1))
    temporary.replace(path)
    return path


def load_results(run_dir: Path) -> list[dict[str, Any]]:
    """Results of every finished step of the run, in step order."""
    found = [json.loads(p.read_text()) for p in Path(run_dir).glob("step_*/results.json")]
    return sorted(found, key=lambda r: r["step"])


def class_span(classes: Sequence[int]) -> str:
    """`16-20` for a run of classes, `20` for one."""
    return f"{classes[0]}-{classes[-1]}" if len(classes) > 1 else str(classes[0])


def format_value(value: Any) -> str:
    """Two decimals for numbers, '-' for missing or NaN, the text otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def table_rows(results: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> list[list[str]]:
    """One row per step: step, class span, old, new, all, hIoU, then the `extra` result keys."""
    rows = []
    for r in results:
        row = [str(r["step"]), class_span(r["classes"]), *(format_value(r.get(k)) for k in RESULT_KEYS.values())]
        rows.append(row + [format_value(r.get(k)) for k in extra])
    return rows


def write_table(run_dir: Path, results: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> str:
    """Save `table.csv` and `table.md` in the run folder (base columns, then `extra` keys); return the markdown."""
    columns = [*BASE_COLUMNS, *extra]
    rows = table_rows(results, extra)
    with open(Path(run_dir) / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    (Path(run_dir) / "table.md").write_text(markdown)
    return markdown


def save_artifact(obj: Any, path: Path) -> Path:
    """`torch.save` to a temporary name, then rename: a stage artefact that exists is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, temporary)
    temporary.replace(path)
    return path


def run_stage(artifact: Path, make: Callable[[], Any], name: str, log: Callable[[str], None] = print) -> bool:
    """Run stage `name` unless its `artifact` exists (then say it is skipped); True when the stage ran."""
    if Path(artifact).exists():
        log(f"{name}: already done ({artifact}), skipped")
        return False
    make()
    if not Path(artifact).exists():
        raise RuntimeError(f"{name} finished without writing {artifact}")
    return True
