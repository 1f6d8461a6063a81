"""Pretrained weights come from a file the user names; nothing is downloaded."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


def load_pretrained(model: nn.Module, path: str | Path | None, strict: bool = False, prefix: str = "") -> nn.Module:
    """Load a state dict from `path` (untrusted: `weights_only=True`) into `model`; without a path, say so.

    Accepts a bare state dict or a checkpoint holding one under "state_dict" or "model". `prefix` is stripped from
    keys (e.g. "module." or "backbone."). Returns the model.
    """
    if str(path).strip().lower() == "required":
        raise ValueError(
            "this model starts from pretrained weights: pass a local weights file, or 'none' to train from scratch"
        )
    if path is None or str(path).strip().lower() in ("", "none"):
        print(f"no pretrained weights given for {type(model).__name__}: training from scratch", flush=True)
        return model
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if prefix:
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"no tensor in {path} matches {type(model).__name__} (names or shapes differ)")
    result = model.load_state_dict(usable, strict=strict)
    skipped = sorted(set(state) - set(usable))
    if result.missing_keys or skipped:
        warnings.warn(
            f"loaded {len(usable)} tensors from {path}; {len(result.missing_keys)} model tensors missing, "
            f"{len(skipped)} file tensors skipped (e.g. {skipped[:3]})",
            stacklevel=2,
        )
    print(f"loaded pretrained weights from {path} ({len(usable)} tensors)", flush=True)
    return model
