"""The picture of LbA's idea: for a visible and an infrared image of one person, the dense correspondences
(argmax of the matching probabilities, Eq. 1, drawn as lines from person positions), the person masks (Eq. 3) and
the infrared image softly warped onto the visible one (Eq. 2 applied to pixels)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cvlab_shared.data.reid import IMAGENET_MEAN, IMAGENET_STD, reid_transforms  # noqa: E402
from vireid_dense.cmalign import matching_probability, person_mask  # noqa: E402


def _pair(dm) -> tuple[object, object]:
    """The first test identity with both a visible and an infrared image."""
    recs, infrared = dm.test_records, dm.test_infrared
    for i, r in enumerate(recs):
        if infrared[i]:
            continue
        for j, s in enumerate(recs):
            if infrared[j] and s.pid == r.pid:
                return r, s
    raise ValueError("no test identity has both a visible and an infrared image")


@torch.no_grad()
def correspondences(net, x_visible: torch.Tensor, x_infrared: torch.Tensor, temperature: float = 50.0) -> dict:
    """Layer4 matching probabilities visible -> infrared and both person masks, for one image pair (1,3,H,W)."""
    was = net.training
    net.eval()
    f = net.layer4(net.to_layer3(torch.cat([net.stem(x_visible, "visible"), net.stem(x_infrared, "infrared")])))
    net.train(was)
    prob = matching_probability(f[:1], f[1:], temperature)[0]
    masks = person_mask(f)
    return {"prob": prob, "mask_visible": masks[0], "mask_infrared": masks[1], "shape": tuple(f.shape[2:])}


def save_correspondence_plot(module, dm, path: Path, max_lines: int = 24) -> Path:
    """Save the figure for the first test identity with images in both modalities; returns the path."""
    rv, ri = _pair(dm)
    from PIL import Image

    transform = reid_transforms(False, size=tuple(dm.hparams.image_size))
    xv = transform(Image.open(rv.path).convert("RGB"))[None].to(module.device)
    xi = transform(Image.open(ri.path).convert("RGB"))[None].to(module.device)
    res = correspondences(module.net, xv, xi, module.hparams.temperature)
    h, w = res["shape"]
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    show = lambda x: (x[0].cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    iv, ii = show(xv), show(xi)
    height, width = iv.shape[:2]
    small = F.adaptive_avg_pool2d(xi.cpu() * std + mean, (h, w))[0].flatten(1)  # 3 x HW
    warped = (small @ res["prob"].cpu().T).reshape(3, h, w).permute(1, 2, 0).clamp(0, 1).numpy()

    fig, axes = plt.subplots(1, 4, figsize=(9, 4.2))
    axes[0].imshow(np.concatenate([iv, ii], axis=1))
    mask_v = res["mask_visible"].cpu().flatten()
    target = res["prob"].cpu().argmax(1)
    cell_y, cell_x = height / h, width / w
    for p in torch.argsort(mask_v, descending=True)[:max_lines].tolist():
        q = int(target[p])
        y0, x0 = (p // w + 0.5) * cell_y, (p % w + 0.5) * cell_x
        y1, x1 = (q // w + 0.5) * cell_y, (q % w + 0.5) * cell_x + width
        axes[0].plot([x0, x1], [y0, y1], "-", lw=0.8, color=plt.cm.viridis(float(mask_v[p])))
    axes[0].set_title(f"visible | infrared (id {rv.pid})\nargmax of P, top-{max_lines} mask positions", fontsize=8)
    axes[1].imshow(iv)
    axes[1].imshow(res["mask_visible"].cpu().numpy(), alpha=0.55, cmap="jet", extent=(0, width, height, 0))
    axes[1].set_title("person mask (visible)", fontsize=8)
    axes[2].imshow(ii)
    axes[2].imshow(res["mask_infrared"].cpu().numpy(), alpha=0.55, cmap="jet", extent=(0, width, height, 0))
    axes[2].set_title("person mask (infrared)", fontsize=8)
    axes[3].imshow(warped, interpolation="nearest")
    axes[3].set_title("infrared warped\nonto visible (P x pixels)", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
