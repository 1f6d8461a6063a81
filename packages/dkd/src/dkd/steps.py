"""The run folder of a multi-step DKD run: one sub-folder per step with its checkpoint and results, and the table."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

COLUMNS = ("step", "classes", "old", "new", "all", "hIoU")


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / f"step_{step}"


def step_checkpoint(run_dir: Path, step: int) -> Path:
    """The checkpoint that feeds step + 1 (the last epoch, as in the official code)."""
    return step_dir(run_dir, step) / "last.ckpt"


def save_step_results(run_dir: Path, step: int, classes: list[int], results: dict[str, Any]) -> Path:
    """Write `step_N/results.json` (old/new/all mIoU, hIoU, per-class IoU in %) and return its path."""
    path = step_dir(run_dir, step) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"step": step, "classes": classes, **results}, indent=1))
    return path


def load_results(run_dir: Path) -> list[dict[str, Any]]:
    """Results of every finished step of the run, in step order."""
    found = [json.loads(p.read_text()) for p in run_dir.glob("step_*/results.json")]
    return sorted(found, key=lambda r: r["step"])


def _span(classes: list[int]) -> str:
    return f"{classes[0]}-{classes[-1]}" if len(classes) > 1 else str(classes[0])


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    return [[str(r["step"]), _span(r["classes"]), *(_fmt(r.get(k)) for k in ("old", "new", "all", "hiou"))] for r in results]


def write_table(run_dir: Path, results: list[dict[str, Any]]) -> str:
    """Save `table.csv` and `table.md` in the run folder; return the markdown table."""
    rows = table_rows(results)
    with open(run_dir / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    (run_dir / "table.md").write_text(markdown)
    return markdown
