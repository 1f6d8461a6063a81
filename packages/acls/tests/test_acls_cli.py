"""`acls train` end to end in subprocesses: one process vs DDP on two CPU processes (gloo), and resume.

All three runs use the same short recipe on noisy digits; the small CNN has no batch norm and digits no
augmentation, so two DDP ranks with batch_size 32 each (batch_size is per process) must follow the
single-process run with batch_size 64, and a run resumed from last.ckpt must end exactly where the uninterrupted
run ends.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = ["--trainer.max_epochs=4", "--model.lr=0.1", "--model.milestones=[3]", "--trainer.enable_model_summary=false"]


def _acls(folder: Path, *args: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "acls", "train", *RECIPE, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted((folder / "runs" / "acls").glob("version_*"))
    result = json.loads((runs[-1] / "calibration.json").read_text())
    result["stdout"] = proc.stdout
    result["run_dir"] = runs[-1]
    return result


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _acls(tmp_path_factory.mktemp("single"))


@pytest.mark.slow
def test_single_process_prints_metrics_and_writes_diagram(single):
    out = single["stdout"]
    for name in ("ACC", "ECE", "AECE", "CECE", "NLL"):
        assert name in out
    assert "test T=" in out and (single["run_dir"] / "reliability.png").is_file()
    assert single["num_test_samples"] == 719 and single["test"]["acc"] > 0.25


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(single, tmp_path):
    ddp = _acls(tmp_path, "--trainer.strategy=ddp", "--trainer.devices=2", "--data.batch_size=32")  # 2 x 32 = 64
    assert ddp["num_test_samples"] == 719  # every test sample counted once across the two ranks
    for split in ("test", "test_ts"):
        for name in ("acc", "ece", "aece", "cece", "nll"):
            assert ddp[split][name] == pytest.approx(single[split][name], abs=2e-3), (split, name)
    assert ddp["temperature"] == pytest.approx(single["temperature"], rel=1e-2)


@pytest.mark.slow
def test_resume_from_last_checkpoint_matches_uninterrupted(single, tmp_path):
    first = _acls(tmp_path, "--trainer.max_epochs=1")
    last = first["run_dir"] / "checkpoints" / "last.ckpt"
    assert last.is_file()
    resumed = _acls(tmp_path, "--trainer.max_epochs=4", f"--ckpt_path={last}")
    for split in ("test", "test_ts"):
        for name in ("acc", "ece", "aece", "cece", "nll"):
            assert resumed[split][name] == pytest.approx(single[split][name], abs=1e-5), (split, name)
