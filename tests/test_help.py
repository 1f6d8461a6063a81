"""Every package's `train --help` / `test --help` leads with a short summary a user can read (what the command does,
the packaged configs, the options people change, an example) before any long listing; `test --help` does not
describe itself as training."""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))


def command(member: Path):
    scripts = tomllib.loads((member / "pyproject.toml").read_text())["project"]["scripts"]
    script, target = next(iter(scripts.items()))
    module, _, function = target.partition(":")
    return script, getattr(importlib.import_module(module), function)


def _help(main, args: list[str], capsys) -> list[str]:
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code in (0, None)
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("member", MEMBERS, ids=[m.name for m in MEMBERS])
def test_help_leads_with_a_short_summary(member, capsys, monkeypatch):
    script, main = command(member)
    monkeypatch.setattr(sys, "argv", [script])
    if script == "az-nas":  # az-nas's main job is `search`; its train/test are LightningCLI runs like the others
        search = "\n".join(_help(main, ["search", "--help"], capsys)[:40])
        assert "search" in search and "--num-candidates" in search
    train = _help(main, ["train", "--help"], capsys)
    head = "\n".join(train[:45])
    assert "packaged configs" in head, head
    assert "example" in head, head
    assert len(train[0]) < 200 and train[0].strip(), train[:3]
    test = "\n".join(_help(main, ["test", "--help"], capsys)[:45])
    assert "Fit the model" not in test and "test" in test
