"""The camera-driven scheduler of CaCL: rank target cameras by MMD to the source, then grow the camera set stage by stage.

Paper (abstract, teaser fig. b): the target training set is split by camera; the subsets closer to the source (by
MMD) come first, and training adds subsets progressively (cumulative stages, one camera per stage in the figure).
The MMD estimator and the Gaussian kernel family are Gretton et al. (JMLR 2012, eq. 5 biased / eq. 3 unbiased) with
the multi-bandwidth sum of DAN (Long et al., ICML'15); the median-distance bandwidth is our choice. Cameras are ranked
with the unbiased estimate: the biased one adds about (k(x,x) - E k(x,x')) / m for a camera of m images, so small
cameras would look farther from the source than large shifted ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    """Median pairwise squared Euclidean distance of the pooled samples (the usual kernel-width heuristic)."""
    z = torch.cat([x, y])
    d = torch.cdist(z, z).pow(2)
    off = d[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
    return float(off.median().clamp(min=1e-12))


def gaussian_mmd2(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidth: float | None = None,
    multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
    unbiased: bool = False,
) -> torch.Tensor:
    """Squared MMD between samples x (n, d) and y (m, d) with a sum of Gaussian kernels exp(-|a-b|^2 / (s*bw)).

    MMD^2 = E k(x,x') + E k(y,y') - 2 E k(x,y) (Gretton et al. 2012, eq. 3 with `unbiased`, eq. 5 otherwise).
    `bandwidth` defaults to the median squared distance of the pooled samples; `multipliers` scale it (DAN).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    bw = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d / (s * bw)) for s in multipliers)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD needs at least two samples on each side")
        exx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        eyy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        exx, eyy = kxx.mean(), kyy.mean()
    return exx + eyy - 2.0 * kxy.mean()


def _subsample(x: torch.Tensor, max_samples: int | None, generator: torch.Generator) -> torch.Tensor:
    if max_samples is None or len(x) <= max_samples:
        return x
    return x[torch.randperm(len(x), generator=generator)[:max_samples].to(x.device)]


def camera_mmd(
    source: torch.Tensor,
    target: torch.Tensor,
    target_cameras: torch.Tensor,
    normalize: bool = True,
    max_samples: int | None = 1000,
    seed: int = 0,
    **mmd_kwargs,
) -> dict[int, float]:
    """MMD^2 between the source features and each target camera's features, {camera: value}.

    `normalize` L2-normalises features first (the retrieval geometry); at most `max_samples` per set are drawn
    (seeded) to bound the O(n^2) kernel cost. One bandwidth (median of source + all target) serves every camera so
    the values are comparable. The estimate is the unbiased one (Gretton et al. 2012, eq. 3; `unbiased=False` gives
    eq. 5), whose expectation does not depend on the camera's sample count, so the order reflects the domain shift
    only; it can be slightly negative for a camera with no shift.
    """
    if len(target) != len(target_cameras):
        raise ValueError(f"{len(target)} target features but {len(target_cameras)} camera labels")
    if normalize:
        source, target = F.normalize(source.float(), dim=1), F.normalize(target.float(), dim=1)
    mmd_kwargs.setdefault("unbiased", True)
    g = torch.Generator().manual_seed(seed)
    src = _subsample(source, max_samples, g)
    if "bandwidth" not in mmd_kwargs:
        mmd_kwargs["bandwidth"] = median_bandwidth(src.double(), _subsample(target, max_samples, g).double())
    out: dict[int, float] = {}
    for cam in sorted(int(c) for c in torch.unique(target_cameras)):
        feats = _subsample(target[target_cameras == cam], max_samples, g)
        if mmd_kwargs["unbiased"] and len(feats) < 2:
            raise ValueError(f"target camera {cam} has {len(feats)} image(s): the unbiased MMD needs at least two")
        out[cam] = float(gaussian_mmd2(src, feats, **mmd_kwargs))
    return out


def cumulative_stages(order: Sequence[int], cameras_per_stage: int = 1) -> list[list[int]]:
    """Stage k trains on the first k*cameras_per_stage cameras of `order`; the last stage holds them all."""
    if cameras_per_stage < 1:
        raise ValueError(f"cameras_per_stage must be >= 1, got {cameras_per_stage}")
    cuts = list(range(cameras_per_stage, len(order), cameras_per_stage)) + [len(order)]
    return [list(order[:c]) for c in cuts]


def stage_of_epoch(epoch: int, num_stages: int, total_epochs: int, stage_epochs: int | None = None) -> int:
    """0-based stage of adaptation epoch `epoch` (0-based) out of `total_epochs` (the paper's split is unknown).

    `stage_epochs=None` splits the epochs evenly over the stages; an integer gives every stage but the last that
    many epochs and the last stage (every camera) the rest, so the full target set is not starved of training.
    """
    if not 0 <= epoch < total_epochs:
        raise ValueError(f"epoch {epoch} outside the {total_epochs} adaptation epochs")
    if stage_epochs is None:
        return min(num_stages - 1, epoch * num_stages // total_epochs)
    if stage_epochs < 1:
        raise ValueError(f"stage_epochs must be at least 1 (None splits the epochs evenly), got {stage_epochs}")
    if (num_stages - 1) * stage_epochs >= total_epochs:
        raise ValueError(
            f"stage_epochs={stage_epochs} leaves no epoch for the last of {num_stages} stages in {total_epochs} "
            f"adaptation epochs: use stage_epochs <= {(total_epochs - 1) // (num_stages - 1)} or more adaptation epochs"
        )
    return min(num_stages - 1, epoch // stage_epochs)


@dataclass(frozen=True)
class CameraCurriculum:
    """The scheduler's output: per-camera MMD^2, cameras in ascending MMD, and the cumulative camera sets."""

    mmd: dict[int, float]
    order: list[int]
    stages: list[list[int]]

    def describe(self) -> str:
        """One line per stage and the MMD order, for logs."""
        ranked = ", ".join(f"cam {c}: {self.mmd[c]:.4f}" for c in self.order)
        lines = [f"MMD camera order (closest to source first): {ranked}"]
        lines += [f"  stage {i + 1}: cameras {s}" for i, s in enumerate(self.stages)]
        return "\n".join(lines)


def camera_curriculum(
    source_features: torch.Tensor,
    target_features: torch.Tensor,
    target_cameras: torch.Tensor,
    cameras_per_stage: int = 1,
    curriculum: bool = True,
    **mmd_kwargs,
) -> CameraCurriculum:
    """Rank target cameras by MMD to the source (ascending) and build cumulative stages.

    With `curriculum=False` (the ablation) there is one stage holding every camera; the MMD is still reported.
    """
    mmd = camera_mmd(source_features, target_features, target_cameras, **mmd_kwargs)
    order = sorted(mmd, key=lambda c: (mmd[c], c))
    stages = cumulative_stages(order, cameras_per_stage) if curriculum else [list(order)]
    return CameraCurriculum(mmd=mmd, order=order, stages=stages)
