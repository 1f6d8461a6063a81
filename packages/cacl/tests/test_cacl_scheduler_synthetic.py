"""The scheduler recovers the known camera order of the core's synthetic data (graded camera shifts)."""

import numpy as np
import pytest
import torch
from PIL import Image

from cacl import camera_curriculum
from cvlab_shared.data.reid import read_market1501
from cvlab_shared.data.synthetic_reid import write_synthetic_reid


def thumbnails(records) -> torch.Tensor:
    """4x8 RGB thumbnails as features: they keep the colour cast, brightness and contrast a camera style sets."""
    arrays = [
        np.asarray(Image.open(r.path).convert("RGB").resize((4, 8)), dtype=np.float32).ravel() / 255 for r in records
    ]
    return torch.from_numpy(np.stack(arrays))


@pytest.mark.parametrize("num_cams,seed", [(6, 2), (4, 5)])
def test_mmd_order_is_the_synthetic_shift_order(tmp_path, num_cams, seed):
    common = dict(num_train_ids=24, num_test_ids=4, images_per_cam=3, camera_bias=0.05)
    write_synthetic_reid(tmp_path / "source", num_cams=4, camera_shift=0.0, seed=1, **common)
    meta = write_synthetic_reid(tmp_path / "target", num_cams=num_cams, camera_shift=1.0, seed=seed, **common)
    source, target = read_market1501(tmp_path / "source"), read_market1501(tmp_path / "target")
    cams = torch.tensor([r.camid for r in target.train])
    cur = camera_curriculum(thumbnails(source.train), thumbnails(target.train), cams)
    assert cur.order == meta["camera_shift_order"]
    assert cur.stages[0] == [meta["camera_shift_order"][0]] and len(cur.stages) == num_cams
