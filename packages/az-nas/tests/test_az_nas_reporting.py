"""Scoring follows the paper's per-dataset protocol, batching changes nothing, evolution scores what it promises."""

import json

import pytest

from az_nas.benchmark import PROTOCOLS
from az_nas.cli import main
from az_nas.proxies.flops import count_flops
from az_nas.search.evolution import evolution_search
from az_nas.search.random_search import random_search
from az_nas.spaces.mobilenetv2 import MBV2Genome, mbv2_flops
from az_nas.spaces.nb201 import NB201Network


def test_protocols_are_the_papers():
    assert PROTOCOLS == {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}


@pytest.mark.parametrize("num_classes", [100, 120])
def test_complexity_does_not_depend_on_batch_and_counts_the_models_classes(num_classes):
    kwargs = dict(seed=3, batch_size=4, resolution=16, num_classes=num_classes, show_progress=False)
    one = random_search(3, batch=1, **kwargs)
    stacked = random_search(3, batch=3, **kwargs)
    assert one.candidates == stacked.candidates
    for arch, a, b in zip(one.candidates, one.scores, stacked.scores):
        want = count_flops(NB201Network(arch, num_classes=num_classes), (1, 3, 16, 16))
        assert a["complexity"] == b["complexity"] == want


@pytest.mark.parametrize("dataset,classes,size", [("cifar100", 100, 32), ("ImageNet16-120", 120, 16)])
def test_search_scores_with_the_datasets_protocol(tmp_path, dataset, classes, size):
    out = tmp_path / dataset
    main(["search", "--num-candidates", "2", "--batch-size", "4", "--dataset", dataset, "--out", str(out),
          "--no-progress"])
    payload = json.loads((out / "results.json").read_text())
    assert payload["extra"]["num_classes"] == classes and payload["extra"]["input_shape"] == [4, 3, size, size]


def test_evolution_scores_exactly_the_requested_children_within_budget_and_cap():
    result = evolution_search(450e6, 14, iterations=5, population=3, batch=2, batch_size=2, resolution=32,
                              show_progress=False)
    assert len(result.candidates) == len(result.scores) == 5 and result.space == "mobilenetv2"
    assert result.extra["stopped"] is None
    for text, scores in zip(result.candidates, result.scores):
        child = MBV2Genome.from_json(text)
        assert child.num_layers <= 14 and scores["complexity"] == mbv2_flops(child) <= 450e6


def test_evolution_that_cannot_continue_says_so():
    with pytest.warns(UserWarning, match="stopped after 0 of 3 children"):
        result = evolution_search(1e6, 14, iterations=3, batch=2, batch_size=2, resolution=32, show_progress=False)
    assert result.candidates == [] and "FLOPs budget" in result.extra["stopped"]
