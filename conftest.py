"""Workspace-wide pytest options: `--gpu` runs the tests marked `gpu` (they need a CUDA device)."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", help="run tests marked gpu; they fail if no CUDA device is present")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--gpu"):
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: run with --gpu on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
