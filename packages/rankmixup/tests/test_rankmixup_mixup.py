"""multi_mixup: seeded reproducibility, Beta(a, a) per copy, mixup-major layout, images and features alike."""

import numpy as np
import pytest
import torch

from rankmixup import multi_mixup, sample_mixup


def test_same_generator_seed_gives_same_mixup_and_leaves_global_rng_alone():
    x, y = torch.randn(8, 3, 4, 4), torch.arange(8) % 4
    state = torch.get_rng_state()
    a = multi_mixup(x, y, 4, num_mixup=3, alpha=2.0, generator=torch.Generator().manual_seed(5))
    b = multi_mixup(x, y, 4, num_mixup=3, alpha=2.0, generator=torch.Generator().manual_seed(5))
    c = multi_mixup(x, y, 4, num_mixup=3, alpha=2.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.lam, b.lam) and torch.equal(a.perm, b.perm)
    assert not torch.equal(a.lam, c.lam)


def test_layout_is_mixup_major_and_soft_labels_follow_lam():
    x = torch.arange(5, dtype=torch.float32).view(5, 1)
    y = torch.arange(5)
    out = multi_mixup(x, y, 5, num_mixup=2, alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert out.inputs.shape == (10, 1) and out.soft_targets.shape == (10, 5)
    for m in range(2):
        lam, perm = out.lam[m].item(), out.perm[m]
        rows = slice(5 * m, 5 * m + 5)
        torch.testing.assert_close(out.inputs[rows, 0], lam * x[:, 0] + (1 - lam) * x[perm, 0])
        torch.testing.assert_close(out.soft_targets[rows].sum(1), torch.ones(5))
        same = perm == y
        assert torch.allclose(out.soft_targets[rows][~same].max(1).values,
                              torch.tensor(max(lam, 1 - lam), dtype=torch.float32))


def test_features_mix_like_images():
    feats, y = torch.randn(6, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    out = multi_mixup(feats, y, 3, num_mixup=3, alpha=2.0, generator=torch.Generator().manual_seed(1))
    assert out.inputs.shape == (18, 16)


def test_lam_is_beta_distributed():
    lam, _ = sample_mixup(4, 4000, 2.0, torch.Generator().manual_seed(0))
    # Beta(2, 2): mean 1/2, variance 1/20
    assert lam.mean().item() == pytest.approx(0.5, abs=0.02)
    assert lam.var().item() == pytest.approx(0.05, abs=0.005)
    ones, _ = sample_mixup(4, 3, 0.0, torch.Generator().manual_seed(0))
    assert ones.tolist() == [1.0, 1.0, 1.0]
    ks = np.histogram(sample_mixup(4, 4000, 1.0, torch.Generator().manual_seed(0))[0].numpy(), bins=4, range=(0, 1))[0]
    assert ks.min() > 850  # Beta(1, 1) is uniform


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        sample_mixup(4, 0, 1.0)
    with pytest.raises(ValueError):
        from rankmixup import mix
        mix(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 2, torch.ones(2), torch.zeros(1, 4, dtype=torch.long))
