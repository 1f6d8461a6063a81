"""The generic multi-step run folder: finished steps are skipped, results become one table, artefacts are atomic."""

import pytest
import torch

from cvlab_shared.steps import (
    load_results,
    pending_steps,
    run_stage,
    save_artifact,
    save_step_results,
    step_checkpoint,
    step_dir,
    write_table,
)


def test_pending_steps_skip_finished_and_rerun_one(tmp_path):
    assert pending_steps(tmp_path, 3) == [0, 1, 2]
    save_step_results(tmp_path, 0, [1, 2], {"old": 50.0})
    assert pending_steps(tmp_path, 3) == [1, 2]
    assert pending_steps(tmp_path, 3, only=0) == [0]
    with pytest.raises(ValueError, match="0..2"):
        pending_steps(tmp_path, 3, only=3)
    assert step_checkpoint(tmp_path, 1) == step_dir(tmp_path, 1) / "last.ckpt"


def test_table_orders_steps_and_writes_extra_columns(tmp_path):
    save_step_results(tmp_path, 1, [16, 17, 18, 19, 20], {"old": 70.0, "new": 30.5, "all": 60.0, "hiou": 42.3,
                                                          "memory_bytes": 1024})
    save_step_results(tmp_path, 0, list(range(1, 16)), {"old": 80.0, "new": None, "all": 80.0, "hiou": None})
    results = load_results(tmp_path)
    assert [r["step"] for r in results] == [0, 1]
    markdown = write_table(tmp_path, results, extra=["memory_bytes"])
    assert markdown.splitlines()[0] == "| step | classes | old | new | all | hIoU | memory_bytes |"
    assert "| 0 | 1-15 | 80.00 | - | 80.00 | - | - |" in markdown
    assert "| 1 | 16-20 | 70.00 | 30.50 | 60.00 | 42.30 | 1024 |" in markdown
    csv_lines = (tmp_path / "table.csv").read_text().splitlines()
    assert csv_lines[2] == "1,16-20,70.00,30.50,60.00,42.30,1024"


def test_run_stage_skips_existing_artifact_and_checks_it_was_written(tmp_path):
    target = tmp_path / "step_1" / "memory.pt"
    calls = []
    assert run_stage(target, lambda: calls.append(save_artifact({"x": torch.ones(2)}, target)), "memory")
    assert torch.load(target, weights_only=True)["x"].sum() == 2
    messages = []
    assert not run_stage(target, lambda: calls.append(1), "memory", log=messages.append)
    assert len(calls) == 1 and "already done" in messages[0]
    assert not list(target.parent.glob(".*.tmp"))
    with pytest.raises(RuntimeError, match="without writing"):
        run_stage(tmp_path / "never.pt", lambda: None, "broken")
