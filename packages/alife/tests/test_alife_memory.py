"""Feature memory: class-region means, extraction, file checks, the memory update, batched vs looped rotations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alife import CayleyRotation, FeatureMemory
from alife.memory import MemoryFileError, class_region_means, sampling_plan
from alife.model import build_network, freeze, init_classifier_like_mib
from alife.stages import extract_memory, train_rotations
from cvlab_shared.data.seg_transforms import eval_transform
from cvlab_shared.data.segmentation import SegmentationDataset, voc_samples
from cvlab_shared.data.synthetic_seg import write_synthetic_voc


def test_class_region_means_match_a_pixel_loop():
    torch.manual_seed(0)
    feature = torch.rand(3, 5, 4, 4)
    mask = torch.randint(0, 3, (3, 16, 16))
    mask[2] = 0
    mask[2, 0, 0] = 2  # 1 pixel of 256: below 0.5 %
    classes = torch.tensor([1, 2, 2])
    means, valid = class_region_means(feature, mask, classes)
    up = F.interpolate(feature, size=(16, 16), mode="bilinear", align_corners=True)
    for n in range(3):
        region = mask[n] == classes[n]
        torch.testing.assert_close(means[n], up[n][:, region].mean(dim=1))
    assert valid.tolist() == [True, True, False]


def test_sampling_plan_is_seeded_and_draws_only_eligible_images():
    eligible = [np.array([3, 5]), np.array([7])]
    plan = sampling_plan(eligible, [4, 2], seed=1)
    assert plan == sampling_plan(eligible, [4, 2], seed=1)
    assert [k for k, _ in plan] == [0, 0, 0, 0, 1, 1]
    assert {i for k, i in plan if k == 0} <= {3, 5} and {i for k, i in plan if k == 1} == {7}


def test_memory_file_checks(tmp_path):
    memory = FeatureMemory(torch.randn(4, 2, 8))
    memory.save(tmp_path / "m.pt")
    assert FeatureMemory.load(tmp_path / "m.pt", 4, 8).nbytes == 4 * 2 * 8 * 4
    with pytest.raises(MemoryFileError, match="8-d features but the model's are 16-d"):
        FeatureMemory.load(tmp_path / "m.pt", 4, 16)
    with pytest.raises(MemoryFileError, match="4 classes, this step needs 5"):
        FeatureMemory.load(tmp_path / "m.pt", 5, 8)
    torch.save({"other": 1}, tmp_path / "bad.pt")
    with pytest.raises(MemoryFileError, match="not a feature memory"):
        FeatureMemory.load(tmp_path / "bad.pt")
    with pytest.raises(MemoryFileError, match="missing feature memory"):
        FeatureMemory.load(tmp_path / "none.pt", made_by="alife train --memory")


def test_memory_update_rotates_each_class_by_its_own_matrix():
    torch.manual_seed(0)
    rotation = CayleyRotation(3, 6)
    memory = FeatureMemory(torch.randn(3, 4, 6))
    matrices = rotation.matrices().detach()
    rotated = memory.rotated(matrices).features
    for k in range(3):
        torch.testing.assert_close(rotated[k], memory.features[k] @ matrices[k].t())
    torch.testing.assert_close(rotated.norm(dim=-1), memory.features.norm(dim=-1))


def test_batched_cayley_equals_the_class_loop():
    torch.manual_seed(0)
    rotation = CayleyRotation(5, 32)
    with torch.no_grad():
        rotation.theta.normal_(0, 0.3)  # far from identity, so a wrong sign or index would show
    torch.testing.assert_close(rotation.matrices(), rotation.matrices_loop(), atol=1e-5, rtol=1e-5)
    vectors, memory = torch.randn(5, 32), torch.randn(5, 7, 32)
    for x in (vectors, memory):  # the batched solve (no matrix formed) vs per class R_k then a product
        torch.testing.assert_close(rotation(x), rotation.forward_loop(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(FeatureMemory(memory).rotated(rotation).features,
                               FeatureMemory(memory).rotated(rotation.matrices().detach()).features, atol=1e-5, rtol=1e-5)
    wide = CayleyRotation(3, 8)  # more samples per class than dimensions: the update forms R once, then one bmm
    deep = torch.randn(3, 40, 8)
    torch.testing.assert_close(FeatureMemory(deep).rotated(wide).features, wide.forward_loop(deep).detach(),
                               atol=1e-5, rtol=1e-5)
    weights = torch.randn(5, 32)
    for batched, looped in ((rotation(vectors), rotation.forward_loop(vectors)),
                            (rotation.matrices(), rotation.matrices_loop())):
        grad = torch.autograd.grad((batched[..., 0, :] if batched.dim() == 3 else batched).mul(weights).sum(), rotation.theta)
        grad_loop = torch.autograd.grad((looped[..., 0, :] if looped.dim() == 3 else looped).mul(weights).sum(),
                                        rotation.theta)
        torch.testing.assert_close(grad[0], grad_loop[0], atol=1e-5, rtol=1e-4)


def test_batched_cayley_solve_gradients():
    """The hand-written backward of the batched solve against finite differences (float64)."""
    from alife.rotation import _CayleySolve

    torch.manual_seed(0)
    rotation = CayleyRotation(3, 6).double()
    with torch.no_grad():
        rotation.theta.normal_(0, 0.5)
    rhs = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda theta, b: _CayleySolve.apply(theta, b, rotation.source, rotation.upper, rotation.lower),
        (rotation.theta, rhs))


def test_mib_init_and_freezes():
    net = build_network([4, 2], "resnet18", 8, 16)
    before = net.classifier.weight().clone()
    init_classifier_like_mib(net.classifier)
    after = net.classifier.weight()
    assert torch.equal(after[4], before[0]) and torch.equal(after[5], before[0]) and torch.equal(after[1:4], before[1:4])
    assert net.classifier.bias()[0] == net.classifier.bias()[5]
    freeze(net, "step3")
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("classifier.") for name in trainable)
    net = build_network([4, 2], "resnet18", 8, 16)
    freeze(net, "step1")
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert "last_conv.0.weight" in trainable and "backbone.conv1.weight" in trainable
    assert "backbone.bn1.weight" not in trainable and "last_conv.1.weight" in trainable


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    root = write_synthetic_voc(tmp_path_factory.mktemp("voc"), num_train=24, num_val=2, size=32, seed=0)
    return SegmentationDataset(voc_samples(root, "train_aug"), eval_transform(None))


def test_extraction_is_deterministic_and_fills_every_class(tiny_voc):
    torch.manual_seed(0)
    net = build_network([4, 2], "resnet18", 8, 16).eval()
    first, stats = extract_memory(net, tiny_voc, [0, 1, 2], per_class=5, seed=3, batch_size=4)
    second, _ = extract_memory(net, tiny_voc, [0, 1, 2], per_class=5, seed=3, batch_size=7)
    assert first.features.shape == (3, 5, 16) and stats["samples"] == 15
    torch.testing.assert_close(first.features, second.features)
    assert (first.features >= 0).all()  # means of post-ReLU features


def test_rotation_training_lowers_its_loss(tiny_voc):
    torch.manual_seed(0)
    prev = build_network([4, 2], "resnet18", 8, 16).eval()
    curr = build_network([4, 2], "resnet18", 8, 16).eval()
    memory, _ = extract_memory(prev, tiny_voc, [0, 1, 2, 3], per_class=4, seed=0, batch_size=8)
    rotation, stats = train_rotations(prev, curr, memory, tiny_voc, epochs=6, lr=1e-2, batch_size=24, lam=0.95)
    assert stats["loss_last"] < stats["loss_first"]
    matrices = rotation.matrices().detach()
    torch.testing.assert_close(matrices @ matrices.transpose(1, 2), torch.eye(16).expand(4, 16, 16), atol=1e-5, rtol=0)
