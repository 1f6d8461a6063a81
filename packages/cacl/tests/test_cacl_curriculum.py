"""MMD and the camera scheduler on features with a known camera order."""

import pytest
import torch

from cacl import camera_curriculum, cumulative_stages, gaussian_mmd2, stage_of_epoch


def test_mmd_is_zero_for_identical_samples_and_grows_with_the_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    assert float(gaussian_mmd2(x, x)) == pytest.approx(0.0, abs=1e-12)
    values = [
        float(gaussian_mmd2(x, torch.randn(200, 8, generator=g) + s, bandwidth=16.0)) for s in (0.0, 0.5, 1.0, 2.0)
    ]
    assert values == sorted(values)
    unbiased = float(gaussian_mmd2(x, torch.randn(200, 8, generator=g), unbiased=True))
    assert abs(unbiased) < 0.02


def test_mmd_matches_the_definition_for_one_kernel():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]])
    k = lambda a, b: torch.exp(-(torch.tensor(float(a - b), dtype=torch.float64) ** 2) / 2.0)
    expected = (k(0, 0) + 2 * k(0, 1) + k(1, 1)) / 4 + 1 - 2 * (k(0, 3) + k(1, 3)) / 2
    assert float(gaussian_mmd2(x, y, bandwidth=2.0, multipliers=(1.0,))) == pytest.approx(float(expected), rel=1e-9)


def test_cumulative_stages():
    assert cumulative_stages([2, 0, 3, 1]) == [[2], [2, 0], [2, 0, 3], [2, 0, 3, 1]]
    assert cumulative_stages([2, 0, 3, 1, 4], cameras_per_stage=2) == [[2, 0], [2, 0, 3, 1], [2, 0, 3, 1, 4]]


def test_stage_of_epoch_even_split_and_front_stages_of_fixed_length():
    assert [stage_of_epoch(e, 6, 12) for e in range(12)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [stage_of_epoch(e, 4, 10) for e in range(10)] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    # stage_epochs=1: one epoch per partial stage, the last stage (every camera) takes the remaining seven
    assert [stage_of_epoch(e, 6, 12, 1) for e in range(12)] == [0, 1, 2, 3, 4] + [5] * 7
    assert [stage_of_epoch(e, 3, 7, 2) for e in range(7)] == [0, 0, 1, 1, 2, 2, 2]
    assert [stage_of_epoch(e, 1, 3, 5) for e in range(3)] == [0, 0, 0]  # no curriculum: one stage
    with pytest.raises(ValueError, match="leaves no epoch for the last"):
        stage_of_epoch(0, 6, 10, 2)
    with pytest.raises(ValueError, match="at least 1"):
        stage_of_epoch(0, 6, 12, 0)
    with pytest.raises(ValueError, match="outside"):
        stage_of_epoch(12, 6, 12)


def test_scheduler_recovers_a_known_camera_order_from_features():
    g = torch.Generator().manual_seed(1)
    direction = torch.randn(16, generator=g)
    source = torch.randn(300, 16, generator=g) + 3 * direction
    shifts = {0: 2.0, 1: 0.5, 2: 3.0, 3: 1.0}  # how far each camera sits from the source
    target, cams = [], []
    for cam, shift in shifts.items():
        target.append(torch.randn(120, 16, generator=g) + 3 * direction + shift * torch.randn(16, generator=g).sign())
        cams += [cam] * 120
    cur = camera_curriculum(source, torch.cat(target), torch.tensor(cams), normalize=False)
    assert cur.order == [1, 3, 0, 2]
    assert cur.stages == [[1], [1, 3], [1, 3, 0], [1, 3, 0, 2]]
    assert "stage 4" in cur.describe()
    flat = camera_curriculum(source, torch.cat(target), torch.tensor(cams), normalize=False, curriculum=False)
    assert flat.stages == [[1, 3, 0, 2]] and flat.mmd == cur.mmd


def _cameras_of_unequal_size(seed: int, spec: dict[int, tuple[int, float]]):
    """Source N(0, I) and target cameras of {camera: (images, mean shift along one direction)}."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    source = torch.randn(800, 16, generator=g)
    feats, cams = [], []
    for cam, (n, shift) in spec.items():
        feats.append(torch.randn(n, 16, generator=g) + shift * direction)
        cams += [cam] * n
    return source, torch.cat(feats), torch.tensor(cams)


def test_camera_order_follows_the_shift_not_the_camera_size():
    # a large shifted camera and two small cameras with less shift: the order must be the shift order on every seed
    spec = {0: (1000, 1.0), 1: (60, 0.0), 2: (150, 0.5)}
    biased_right = 0
    for seed in range(4):
        source, target, cams = _cameras_of_unequal_size(seed, spec)
        cur = camera_curriculum(source, target, cams, normalize=False)
        assert cur.order == [1, 2, 0], (seed, cur.mmd)
        biased = camera_curriculum(source, target, cams, normalize=False, unbiased=False)
        biased_right += biased.order == [1, 2, 0]
    # the biased estimate (eq. 5) inflates a camera of m images by about 1/m and mostly gets this order wrong
    assert biased_right <= 1


def test_a_camera_with_one_image_is_named_in_the_error():
    g = torch.Generator().manual_seed(0)
    source, target = torch.randn(20, 4, generator=g), torch.randn(5, 4, generator=g)
    with pytest.raises(ValueError, match="target camera 7 has 1 image"):
        camera_curriculum(source, target, torch.tensor([0, 0, 0, 0, 7]), normalize=False)
