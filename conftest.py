"""Workspace-wide pytest options and fixtures: `--gpu` runs the tests marked `gpu` (they need a CUDA device);
`cache` runs a test in its own folder with its own synthetic-data cache."""

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


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """The test's own working folder and `$CVLAB_CACHE` inside it (a CLI run writes nothing elsewhere)."""
    monkeypatch.setenv("CVLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path
