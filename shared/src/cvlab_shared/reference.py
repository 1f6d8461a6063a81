"""Locate the team's read-only reference folder (`../shared` beside the repository): golden files and real data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV = "CVLAB_REFERENCE"


def reference_dir() -> Path:
    """`$CVLAB_REFERENCE`, else the first `shared/golden` found beside the working directory or one of its parents."""
    if os.environ.get(ENV):
        path = Path(os.environ[ENV])
        if not path.is_dir():
            raise FileNotFoundError(f"{ENV}={path} is not a folder")
        return path
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder.parent / "shared"
        if (candidate / "golden").is_dir():
            return candidate
    raise FileNotFoundError(f"no reference folder: set {ENV} or run from a checkout with ../shared/golden beside it")


def reference_path(relative: str) -> Path:
    """A file inside the reference folder, e.g. `golden/calibration.json` or `data/nb201/nats_bench.csv`."""
    path = reference_dir() / relative
    if not path.exists():
        raise FileNotFoundError(f"reference file missing: {path}")
    return path


def load_golden(name: str) -> dict[str, Any]:
    """The parsed golden file `golden/<name>.json`."""
    return json.loads(reference_path(f"golden/{name}.json").read_text())
