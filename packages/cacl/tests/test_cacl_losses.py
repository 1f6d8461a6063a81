"""Camera-diversity weights and loss."""

import pytest
import torch
import torch.nn.functional as F

from cacl import CameraDiversityLoss, camera_diversity_loss, camera_diversity_weights
from cacl.losses import cluster_camera_counts


def test_camera_counts_follow_the_teaser_example():
    # teaser fig. (c): {cam0, cam1, cam2} > {cam2, cam1, cam2} > {cam3 x3}; -1 is an outlier.
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, -1])
    cams = torch.tensor([0, 1, 2, 2, 1, 2, 3, 3, 3, 0])
    assert cluster_camera_counts(labels, cams, 3).tolist() == [3, 2, 1]
    w = camera_diversity_weights(labels, cams, 3)
    assert w[0] > w[1] > w[2]
    torch.testing.assert_close(w.mean(), torch.tensor(1.0))
    torch.testing.assert_close(
        camera_diversity_weights(labels, cams, 3, normalize="total"), torch.tensor([3, 2, 1]) / 4.0
    )
    torch.testing.assert_close(
        camera_diversity_weights(labels, cams, 3, normalize="none", power=2.0), torch.tensor([9.0, 4, 1])
    )


def test_loss_is_weighted_cross_entropy_and_uniform_weights_give_plain_ce():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 1, 0])
    w = torch.tensor([2.0, 1.0, 0.5, 0.0])
    per = F.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(camera_diversity_loss(logits, targets, w), (w[targets] * per).mean())
    torch.testing.assert_close(camera_diversity_loss(logits, targets, torch.ones(4)), F.cross_entropy(logits, targets))


def test_module_offsets_targets_past_the_source_classes_and_can_be_disabled():
    labels, cams = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 0])
    loss = CameraDiversityLoss()
    with pytest.raises(RuntimeError):
        loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    w = loss.set_clusters(labels, cams, 2)
    logits = torch.randn(4, 5, requires_grad=True)
    targets = torch.tensor([0, 1, 1, 0])
    full = torch.cat([torch.ones(3), w])
    expected = camera_diversity_loss(logits, targets + 3, full)
    value = loss(logits, targets, offset=3)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert logits.grad is not None
    off = CameraDiversityLoss(enabled=False)
    assert off.set_clusters(labels, cams, 2).tolist() == [1.0, 1.0]


def test_bad_normalisation_is_rejected():
    with pytest.raises(ValueError, match="normalize"):
        camera_diversity_weights(torch.tensor([0]), torch.tensor([0]), 1, normalize="max")
