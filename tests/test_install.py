"""Each member installs alone from its built wheel (the core wheel beside it) into a fresh venv and its command works.

This is what `pip install <package>` gives a user: no workspace, no editable sources, only the declared
dependencies. Package data (YAML configs) must be inside the wheel for the default runs to work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))

# What a user runs right after installing; the issues ask for these (the default run where it is cheap enough).
SMOKE = {
    "cvlab-acls": [["acls", "--help"], ["acls", "train", "--help"]],
    "rankmixup": [["rankmixup", "train"]],
    "az-nas": [["az-nas", "search"]],
    "cvlab-cacl": [["cacl", "train", "--help"]],
    "cvlab-dkd": [["dkd", "train", "--help"]],
    "vireid-dense": [["vireid-dense", "train", "--help"]],
    "stmn": [["stmn", "train", "--help"]],
    "cvlab-alife": [["alife", "train", "--help"]],
    "bpcl-uda": [["bpcl-uda", "train", "--help"]],
    "oimnet-pp": [["oimnet-pp", "train", "--help"]],
}


def uv() -> str:
    exe = os.environ.get("UV") or shutil.which("uv")
    assert exe, "uv must be on PATH (it is in the workspace's dev group)"
    return exe


def project(member: Path) -> dict:
    return tomllib.loads((member / "pyproject.toml").read_text())["project"]


def clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_", "PYTHONPATH"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # let the fresh venv cache bytecode as a user's would
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["WANDB_MODE"] = "disabled"
    return env


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([uv(), "build", "--wheel", "--package", "cvlab-shared", "--out-dir", str(out)], cwd=ROOT, check=True)
    return out


def test_core_wheel_requires_no_workspace(wheelhouse):
    (wheel,) = wheelhouse.glob("cvlab_shared-*.whl")
    assert wheel.stat().st_size > 0


def test_every_member_pins_the_core_with_a_range():
    assert MEMBERS, "no packages found under packages/"
    for member in MEMBERS:
        deps = project(member)["dependencies"]
        core = [d for d in deps if d.replace("_", "-").startswith("cvlab-shared")]
        assert core and any(op in core[0] for op in (">=", "~=")) and "<" in core[0], f"{member.name}: {core}"


@pytest.mark.slow
@pytest.mark.parametrize("member", MEMBERS, ids=[m.name for m in MEMBERS])
def test_member_installs_alone_and_runs(member, wheelhouse, tmp_path):
    meta = project(member)
    name = meta["name"]
    subprocess.run([uv(), "build", "--wheel", "--package", name, "--out-dir", str(wheelhouse)], cwd=ROOT, check=True)
    wheels = list(wheelhouse.glob(f"{name.replace('-', '_')}-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp_path / "venv"
    subprocess.run([uv(), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    # Install the wheel *file*: by name, PyPI's unrelated projects (acls, cacl, dkd) would win.
    subprocess.run(
        [uv(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "--find-links", str(wheelhouse), str(wheels[0])],
        check=True,
        env={**os.environ, "UV_COMPILE_BYTECODE": "0"},
    )
    env = clean_env(venv)
    scripts = meta.get("scripts", {})
    assert scripts, f"{name} declares no console script"
    for script, target in scripts.items():
        module = target.split(":")[0].split(".")[0]
        subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}"], check=True, env=env, cwd=tmp_path)
        help_out = subprocess.run([str(venv / "bin" / script), "--help"], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert help_out.returncode == 0, help_out.stderr[-3000:]
        assert "train" in help_out.stdout, help_out.stdout
    for command in SMOKE.get(name, []):
        run = subprocess.run([str(venv / "bin" / command[0]), *command[1:]], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{command} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
