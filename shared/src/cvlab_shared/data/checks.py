"""Input checks run by the CLI before any model or Trainer is built: they read folder listings, never write.

A datamodule opts in with a `check_data(stage)` method (raise `InputError`, `FileNotFoundError` or `ValueError`
with one message naming the path and the expected layout). `check_datamodule` calls it, or falls back on
`default_check`: every `*_root` argument that is set must be an existing, non-empty folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class InputError(ValueError):
    """A problem with the user's input (a path, a layout, an option): the CLI prints it as one `error:` line."""


class CorruptFileError(InputError):
    """A data file that cannot be decoded (a truncated JPEG, a broken PNG): the message names it."""


def open_rgb(path: str | Path):
    """A PIL image converted to RGB; a file PIL cannot decode raises `CorruptFileError` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptFileError(f"cannot read image {path}: {exc} (truncated or damaged file?)") from exc


def verify_images(paths) -> int:
    """Decode every image file in `paths` (a layout check before training); the first damaged one raises
    `CorruptFileError` naming it. Returns the number of files read."""
    from PIL import Image

    count = 0
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise CorruptFileError(f"cannot read image {path}: {exc} (truncated or damaged file?)") from exc
        count += 1
    return count


def check_folder(path: str | Path, option: str, layout: str = "") -> Path:
    """`path` must be an existing folder with something in it; the message names the option and the layout."""
    folder = Path(path).expanduser()
    expected = f"; expected layout: {layout}" if layout else ""
    if not folder.exists():
        raise InputError(f"{option} {folder} does not exist{expected}")
    if not folder.is_dir():
        raise InputError(f"{option} {folder} is not a folder{expected}")
    if not any(folder.iterdir()):
        raise InputError(f"{option} {folder} is empty{expected}")
    return folder


def _roots(datamodule: Any) -> dict[str, Any]:
    hparams = dict(getattr(datamodule, "hparams", {}) or {})
    found = {k: v for k, v in hparams.items() if k == "data_root" or k.endswith("_root")}
    for name in ("data_root", "source_root", "target_root"):
        if name not in found and isinstance(getattr(datamodule, name, None), (str, Path)):
            found[name] = getattr(datamodule, name)
    return found


def default_check(datamodule: Any, stage: str = "fit") -> None:
    """Every `data_root` / `*_root` argument that is set names an existing, non-empty folder."""
    for name, value in _roots(datamodule).items():
        if value:
            check_folder(value, f"--data.{name}", "the dataset's own folder layout (the package README shows it)")


def check_classification(datamodule: Any, stage: str = "fit") -> None:
    """The core's ClassificationDataModule: digits takes no data_root; the others must read (layout errors name the
    file and the expected layout). Reading here is not wasted: the datamodule keeps what it read."""
    if datamodule.dataset == "digits":
        if datamodule.data_root:
            raise InputError(
                f"--data.data_root {datamodule.data_root} is ignored by --data.dataset digits (scikit-learn ships it); "
                "drop it, or choose --data.dataset cifar10 | cifar100 | tiny_imagenet | imagefolder"
            )
        return
    datamodule.setup(stage)  # the readers name the folder and the expected layout


def check_datamodule(datamodule: Any, stage: str = "fit") -> None:
    """Run the datamodule's own `check_data(stage)`, a known check for the core's datamodules, or `default_check`."""
    own = getattr(datamodule, "check_data", None)
    if callable(own):
        own(stage)
        return
    from cvlab_shared.data.classification_datamodule import ClassificationDataModule

    if isinstance(datamodule, ClassificationDataModule):
        check_classification(datamodule, stage)
        return
    default_check(datamodule, stage)


def check_checkpoint(path: str | Path, option: str = "--ckpt_path") -> Path:
    """A checkpoint file must exist and be a complete torch zip archive (a truncated copy lacks the zip directory at
    its end): fail with a message naming the file instead of torch's zip-reader error."""
    import zipfile

    file = Path(path).expanduser()
    if not file.exists():
        raise InputError(f"{option} {file} does not exist")
    if file.is_dir():
        raise InputError(f"{option} {file} is a folder; expected a checkpoint file (e.g. .../checkpoints/last.ckpt)")
    size = file.stat().st_size
    with open(file, "rb") as f:
        magic = f.read(4)
    if size == 0 or (magic[:2] == b"PK" and not zipfile.is_zipfile(file)):
        raise InputError(f"{option} {file} is incomplete ({size} bytes; truncated copy or interrupted save?)")
    if magic[:2] != b"PK":
        raise InputError(f"{option} {file} is not a torch checkpoint (expected the zip archive torch.save writes)")
    try:
        with zipfile.ZipFile(file) as archive:
            end = max((i.header_offset + i.compress_size for i in archive.infolist()), default=0)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{option} {file} is incomplete or damaged ({exc})") from None
    if end > size:
        raise InputError(f"{option} {file} is incomplete ({size} bytes, its index needs {end})")
    return file
