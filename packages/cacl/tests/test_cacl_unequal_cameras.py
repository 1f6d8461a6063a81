"""A synthetic target whose cameras differ in size: the writer's option, and the MMD order still follows the shift."""

import numpy as np
import pytest
import torch
from PIL import Image

from cacl import camera_curriculum
from cvlab_shared.data.reid import read_market1501
from cvlab_shared.data.synthetic_reid import write_synthetic_reid


def thumbnails(records) -> torch.Tensor:
    """4x8 RGB thumbnails as features (they keep a camera's colour cast, brightness and contrast)."""
    arrays = [
        np.asarray(Image.open(r.path).convert("RGB").resize((4, 8)), dtype=np.float32).ravel() / 255 for r in records
    ]
    return torch.from_numpy(np.stack(arrays))


def test_writer_makes_cameras_of_the_requested_relative_size(tmp_path):
    common = dict(num_train_ids=12, num_test_ids=3, num_cams=3, images_per_cam=2, seed=4)
    meta = write_synthetic_reid(tmp_path / "a", camera_sizes=(0.5, 1.0, 3.0), **common)
    per_id = [1, 2, 6]  # max(1, round(2 * size)) images of an identity in each camera
    train = read_market1501(tmp_path / "a").train
    counts = [sum(r.camid == c for r in train) for c in range(3)]
    assert counts == meta["train_images_per_camera"]
    ids = [len({r.pid for r in train if r.camid == c}) for c in range(3)]
    assert counts == [n * k for n, k in zip(ids, per_id)]
    with pytest.raises(ValueError, match="one per camera"):
        write_synthetic_reid(tmp_path / "b", camera_sizes=(1.0, 2.0), **common)


def test_mmd_order_follows_the_shift_on_cameras_of_unequal_size(tmp_path):
    # the least shifted cameras are the smallest (where an estimate that grows as a camera shrinks would misorder)
    common = dict(num_train_ids=24, num_test_ids=4, camera_bias=0.05)
    write_synthetic_reid(tmp_path / "source", num_cams=4, camera_shift=0.0, images_per_cam=3, seed=1, **common)
    order = write_synthetic_reid(tmp_path / "probe", num_cams=4, camera_shift=1.0, images_per_cam=1, seed=5,
                                 **common)["camera_shift_order"]
    sizes = [0.0] * 4
    for rank, cam in enumerate(order):
        sizes[cam] = (0.5, 1.0, 3.0, 6.0)[rank]
    meta = write_synthetic_reid(tmp_path / "target", num_cams=4, camera_shift=1.0, images_per_cam=2, seed=5,
                                camera_sizes=sizes, **common)
    assert meta["camera_shift_order"] == order
    source, target = read_market1501(tmp_path / "source"), read_market1501(tmp_path / "target")
    cams = torch.tensor([r.camid for r in target.train])
    assert max(meta["train_images_per_camera"]) >= 6 * min(meta["train_images_per_camera"])
    cur = camera_curriculum(thumbnails(source.train), thumbnails(target.train), cams)
    assert cur.order == order
