"""Calibration metrics against the official implementations' values (golden/calibration.json) and under DDP."""

import socket

import pytest
import torch
import torch.multiprocessing as mp
from calibration_ddp_worker import gather_metrics  # beside this file (conftest puts it on sys.path)

from cvlab_shared.metrics.calibration import aece, accuracy, brier, calibration_report, cece, ece, nll
from cvlab_shared.metrics.calibration_metric import CalibrationMetrics
from cvlab_shared.metrics.reliability import reliability_diagram
from cvlab_shared.metrics.temperature import fit_temperature, official_grid
from cvlab_shared.reference import load_golden

TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    return load_golden("calibration")


def _inputs(golden, case):
    if case["case"].startswith("confidences"):
        data = golden["inputs"]["metric_confidences_200"]
        conf = torch.tensor(data["confidences"], dtype=torch.float64)
        probs = ((1 - conf) / 9)[:, None].repeat(1, 10)
        probs[torch.arange(200), torch.tensor(data["predictions"])] = conf
        return probs.log(), torch.tensor(data["labels"]), 15
    data = golden["inputs"]["metric_logits_200x10"]
    bins = int(case["case"].rsplit("_", 1)[1].removesuffix("bins"))
    return torch.tensor(data["logits"]), torch.tensor(data["labels"]), bins


def test_metrics_match_official(golden):
    for case in golden["metrics"]["cases"]:
        logits, labels, bins = _inputs(golden, case)
        assert ece(logits, labels, bins).item() == pytest.approx(case["ece_ECELoss"], abs=TOL)
        assert aece(logits, labels, bins, official=True).item() == pytest.approx(case["aece_AdaptiveECELoss"], abs=TOL)
        assert cece(logits, labels, bins).item() == pytest.approx(case["cece_ClasswiseECELoss"], abs=TOL)
        assert nll(logits, labels).item() == pytest.approx(case["nll_CrossEntropyLoss"], abs=TOL)
        assert accuracy(logits, labels).item() == pytest.approx(case["acc"], abs=TOL)


def test_default_aece_counts_every_sample(golden):
    logits, labels, _ = _inputs(golden, golden["metrics"]["cases"][0])
    # calibration.md section 3: counting the lowest-confidence sample gives 0.210292 on this input
    assert aece(logits, labels).item() == pytest.approx(0.210292, abs=1e-6)
    # a set whose lowest-confidence sample is wrong and very miscalibrated: only the default sees it
    logits = torch.tensor([[0.0, 0.0]] + [[5.0, 0.0]] * 14)
    labels = torch.tensor([1] + [0] * 14)
    assert aece(logits, labels, n_bins=15, official=True).item() < aece(logits, labels, n_bins=15).item()


def test_brier_and_perfect_predictions():
    logits = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    labels = torch.tensor([0, 1])
    assert brier(logits, labels).item() == pytest.approx(0.0, abs=1e-8)
    assert ece(logits, labels).item() == pytest.approx(0.0, abs=1e-7)
    assert brier(torch.zeros(1, 2), torch.tensor([0])).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="expected logits"):
        ece(torch.zeros(3), torch.zeros(3, dtype=torch.long))


def test_temperature_grid_matches_official(golden):
    ts = golden["metrics"]["temperature_scaling"]
    data = golden["inputs"]["metric_logits_200x10"]
    logits, labels = torch.tensor(data["logits"]), torch.tensor(data["labels"])
    assert official_grid()[16] == 1.7000000000000004
    assert fit_temperature(logits, labels, "ece_grid") == pytest.approx(ts["T_opt_ece"], abs=1e-12)
    assert fit_temperature(logits, labels, "nll_grid") == ts["T_opt_nll"]
    assert ece(logits / ts["T_opt_ece"], labels).item() == pytest.approx(ts["ece_after_T_ece"], abs=TOL)
    assert nll(logits / ts["T_opt_nll"], labels).item() == pytest.approx(ts["nll_after_T_nll"], abs=TOL)
    t = fit_temperature(logits, labels, "nll")
    assert abs(t - ts["T_opt_nll"]) < 0.05  # the continuous optimum lies within one grid step
    assert nll(logits / t, labels).item() <= ts["nll_after_T_nll"] + 1e-7
    with pytest.raises(ValueError, match="unknown temperature method"):
        fit_temperature(logits, labels, "platt")


def test_stateful_metric_equals_pure_function():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(103, 7, generator=g) * 3, torch.randint(0, 7, (103,), generator=g)
    metric = CalibrationMetrics()
    for chunk in range(0, 103, 20):
        metric.update(logits[chunk:chunk + 20], labels[chunk:chunk + 20])
    got, want = metric.compute(), calibration_report(logits, labels)
    assert set(got) == {"acc", "ece", "aece", "cece", "nll", "brier"}
    for name in want:
        assert got[name].item() == pytest.approx(want[name].item(), abs=1e-6)


def test_metric_gathers_across_two_gloo_processes():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(100, 5, generator=g) * 2, torch.randint(0, 5, (100,), generator=g)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(gather_metrics, args=(port, logits, labels, out), nprocs=2, join=True)
    want = calibration_report(logits, labels)
    for rank in (0, 1):
        values, count = out[rank]
        assert count == 100
        for name in want:
            assert values[name] == pytest.approx(want[name].item(), abs=1e-6)


def test_reliability_diagram_png(tmp_path):
    logits, labels = torch.randn(50, 4), torch.randint(0, 4, (50,))
    path = reliability_diagram({"a": (logits, labels), "b": (logits / 2, labels)}, tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
