"""RankMixupClassifier: every loss trains a step, seeded mixup draws, argument checks."""

import lightning.pytorch as pl
import pytest
import torch

from rankmixup.losses import MixupLoss, MNDCGLoss, MRLLoss
from rankmixup.module import RankMixupClassifier

BASE = {"num_classes": 10, "backbone": "small_cnn", "in_channels": 1, "cpu_threads": 1}


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 10


@pytest.mark.parametrize("loss,kind", [("mrl", MRLLoss), ("mndcg", MNDCGLoss), ("mixup", MixupLoss), ("ce", type(None))])
@pytest.mark.parametrize("layer_mix", [0, 4])
def test_each_loss_gives_a_finite_differentiable_loss(loss, kind, layer_mix):
    torch.manual_seed(0)
    model = RankMixupClassifier(loss=loss, num_mixup=3 if loss == "mndcg" else 1, layer_mix=layer_mix, **BASE)
    assert isinstance(model.criterion, kind)
    value, parts = model.training_loss(batch(), 0)
    assert torch.isfinite(value) and value.requires_grad
    assert set(parts) == (set() if loss == "ce" else {"loss_ce", "loss_mixup"})
    value.backward()
    assert model.model.classifier.weight.grad.abs().sum() > 0


def test_mixup_draw_is_seeded_by_seed_rank_epoch_and_batch():
    model = RankMixupClassifier(**BASE)
    a, b, c = model.mixup_generator(3), model.mixup_generator(3), model.mixup_generator(4)
    assert torch.equal(torch.randperm(16, generator=a), torch.randperm(16, generator=b))
    assert not torch.equal(torch.randperm(16, generator=model.mixup_generator(3)), torch.randperm(16, generator=c))
    other = RankMixupClassifier(mixup_seed=1, **BASE)
    assert not torch.equal(torch.randperm(16, generator=other.mixup_generator(3)),
                           torch.randperm(16, generator=model.mixup_generator(3)))


def test_same_seed_same_loss_value():
    values = []
    for _ in range(2):
        torch.manual_seed(0)
        values.append(RankMixupClassifier(loss="mndcg", num_mixup=3, **BASE).training_loss(batch(), 0)[0].item())
    assert values[0] == values[1]


def test_training_loss_takes_the_batch_index_from_lightning_not_from_a_side_channel():
    torch.manual_seed(0)
    model = RankMixupClassifier(loss="mndcg", num_mixup=3, **BASE)
    assert not hasattr(model, "_batch_idx")
    first, again, other = (model.training_loss(batch(), i)[0].item() for i in (3, 3, 4))
    assert first == again and first != other  # the batch index seeds the step's mixup draw


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_mixup=1"):
        RankMixupClassifier(loss="mrl", mrl_reduction="official", num_mixup=3, **BASE)
    with pytest.raises(ValueError, match="layer_mix"):
        RankMixupClassifier(layer_mix=3, **BASE)
    with pytest.raises(ValueError, match="unknown loss"):
        RankMixupClassifier(loss="focal", **BASE)


def save_checkpoint(model, path):
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("loss,kind", [("mrl", MRLLoss), ("mndcg", MNDCGLoss), ("mixup", MixupLoss), ("ce", type(None))])
def test_checkpoint_rebuilds_the_loss_it_was_trained_with(loss, kind, tmp_path):
    torch.manual_seed(0)
    model = RankMixupClassifier(loss=loss, num_mixup=3 if loss == "mndcg" else 1, margin=1.5, alpha=0.3, **BASE)
    path = save_checkpoint(model, tmp_path / f"{loss}.ckpt")
    loaded = RankMixupClassifier.load_from_checkpoint(path, weights_only=True)
    assert isinstance(loaded.criterion, kind) and loaded.hparams.loss == loss
    assert dict(loaded.hparams) == dict(model.hparams)
    assert loaded.training_loss(batch(), 5)[0].item() == model.training_loss(batch(), 5)[0].item()
