"""Every packaged config parses into the ACLS classifier and datamodule with the values it promises."""

import pytest
import yaml

from acls.cli import main
from cvlab_shared.cli import packaged_configs

EXPECTED = {
    "default": ("small_cnn", "digits", 10),
    "acls_resnet50_tiny_imagenet": ("resnet50_tiny", "tiny_imagenet", 200),
    "acls_resnet101_tiny_imagenet": ("resnet101_tiny", "tiny_imagenet", 200),
    "acls_resnet50_cifar10": ("resnet50_cifar", "cifar10", 10),
}


def test_all_configs_are_listed():
    assert set(packaged_configs("acls")) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", name, "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    backbone, dataset, classes = EXPECTED[name]
    assert config["model"]["backbone"] == backbone and config["data"]["dataset"] == dataset
    assert config["model"]["num_classes"] == classes
    assert config["model"]["loss"]["class_path"] == "acls.ACLSLoss"
    assert config["model"]["loss"]["init_args"]["num_classes"] == classes
    # paper configs: the official post-hoc temperature (grid 0.1..10.0, lowest validation ECE), as rankmixup's
    assert config["model"]["temperature_method"] == ("nll" if name == "default" else "ece_grid")
    if dataset == "tiny_imagenet":  # the official schedule (calibration.md section 4)
        assert config["model"]["milestones"] == [40, 60] and config["trainer"]["max_epochs"] == 100
        assert config["data"]["batch_size"] == 64 and config["trainer"]["gradient_clip_val"] == 2.0
        assert config["model"]["loss"]["init_args"]["margin"] == 10.0


def test_loss_can_be_swapped_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model.loss=acls.MbLSLoss", "--model.loss.margin=6", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["loss"]["class_path"] == "acls.MbLSLoss"
    assert config["model"]["loss"]["init_args"]["margin"] == 6.0


def test_loss_choices_are_the_package_losses(capsys):
    """`--model.loss` lists the package's losses, not every torch.nn.Module subclass (about 600 before)."""
    import re

    from acls.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    known = text[text.rindex("--model.loss LOSS ") :].split("known subclasses:", 1)[1].split(")", 1)[0]
    choices = {c.strip() for c in known.split(",")}
    assert {"acls.ACLSLoss", "acls.MbLSLoss", "acls.CrossEntropyLoss", "acls.FocalLoss"} <= choices
    assert all(c.startswith("acls.") for c in choices), choices
