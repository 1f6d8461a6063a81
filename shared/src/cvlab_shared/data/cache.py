"""Where derived data goes (label indexes, synthetic datasets): `$CVLAB_CACHE`, else `~/.cache/cvlab`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

ENV = "CVLAB_CACHE"


def cache_dir(name: str) -> Path:
    """`$CVLAB_CACHE/<name>`, else `~/.cache/cvlab/<name>` (not created)."""
    return Path(os.environ.get(ENV, Path.home() / ".cache" / "cvlab")) / name


def build_once(folder: Path, write: Callable[[Path], object]) -> Path:
    """Return `folder`, first calling `write(tmp)` into a private temporary folder renamed into place, so that
    concurrent callers (DDP ranks, parallel tests) never see a half-written folder."""
    if folder.exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    write(temporary)
    try:
        temporary.rename(folder)
    except OSError:  # another process finished first
        shutil.rmtree(temporary, ignore_errors=True)
        if not folder.exists():
            raise
    return folder
