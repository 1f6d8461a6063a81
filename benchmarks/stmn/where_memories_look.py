"""Where STMN's memories act on the synthetic set with planted distractors: the spatial memory's read strength
|BN(r)| per position (on the per-camera bar or not) and the temporal frame weights on occluded vs clean frames.

Loads the network that `ablation.py --save-net PATH` saved (the first seed's STMN), runs the RRS test frames of every
test tracklet, and uses the writer's per-frame flags (bar present, occluded, blurred). Prints the numbers and writes
a figure.

Usage:
    uv run --locked python benchmarks/stmn/ablation.py --seeds 0 --variants stmn --save-net /tmp/stmn_seed0.pt
    uv run --locked python benchmarks/stmn/where_memories_look.py --net /tmp/stmn_seed0.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from cvlab_shared.data.reid import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from cvlab_shared.data.video import VideoDataset, rrs_indices, video_transforms  # noqa: E402
from stmn import STMN  # noqa: E402
from stmn.data import StmnDataModule  # noqa: E402

HERE = Path(__file__).parent


@torch.no_grad()
def probe(net: STMN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Read strength maps (B, S, h, w) of the spatial memory and frame weights (B, S) of the temporal memory."""
    b, s = x.shape[:2]
    shared = net.trunk(x.flatten(0, 1))
    key = net.layer4_key_s(shared)
    n, d, h, w = key.shape
    read = net.smem.bn(net.smem.attention(key) @ net.smem.val).reshape(n, h, w, d)
    weights = net(x).frame_weights
    return read.norm(dim=-1).reshape(b, s, h, w), weights


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", required=True)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--test-ids", type=int, default=64, help="as ablation.py --test-ids")
    p.add_argument("--figure", default=str(HERE / "where_memories_look.png"))
    args = p.parse_args()
    saved = torch.load(args.net, weights_only=True)
    size = tuple(int(v) for v in saved["size"])
    net = STMN(int(saved["num_classes"]), backbone="tiny", width=16, seq_len=6).eval()
    net.load_state_dict(saved["state_dict"])
    dm = StmnDataModule(image_size=size, synthetic_train_ids=32, synthetic_test_ids=args.test_ids,
                        synthetic_seed=args.data_seed)
    dm.prepare_data()
    dm.setup()
    meta = dm.synthetic_meta()
    tracks = dm.split.test
    loader = DataLoader(VideoDataset(tracks, 6, "rrs", video_transforms(size)), batch_size=16)
    maps, weights = [], []
    for x, *_ in loader:
        m, w = probe(net, x)
        maps.append(m)
        weights.append(w)
    maps, weights = torch.cat(maps), torch.cat(weights)
    h, w = maps.shape[-2:]
    on_bar, off_bar, bar_cols_no_bar = [], [], []
    occluded_w, clean_w = [], []
    for t, (track, flags) in enumerate(zip(tracks, meta["test_flags"])):
        bar = meta["bars"][track.camid]
        cols = np.arange(w)
        centre = (cols + 0.5) / w
        in_bar = (centre >= bar["x0"]) & (centre < bar["x0"] + bar["width"])
        if not in_bar.any():
            in_bar[int(np.clip((bar["x0"] + bar["width"] / 2) * w, 0, w - 1))] = True
        frames = rrs_indices(len(track.paths), 6)
        occ = [flags["occluded"][f] for f in frames]
        if any(occ) and not all(occ):
            occluded_w += [float(weights[t, i]) for i in range(6) if occ[i]]
            clean_w += [float(weights[t, i]) for i in range(6) if not occ[i]]
        for i, f in enumerate(frames):
            strength = maps[t, i].numpy()
            if flags["bar"][f]:
                on_bar.append(strength[:, in_bar].mean())
                off_bar.append(strength[:, ~in_bar].mean())
            else:
                bar_cols_no_bar.append(strength[:, in_bar].mean())
    print("spatial memory read strength |BN(r)| (mean over positions):")
    print(f"  frames with the bar: at the bar's columns {np.mean(on_bar):.4f}, elsewhere {np.mean(off_bar):.4f}")
    print(f"  frames without the bar: at the bar's columns {np.mean(bar_cols_no_bar):.4f}")
    print("temporal memory frame weights (RRS test frames, tracklets with occluded and clean frames):")
    print(f"  occluded frames {np.mean(occluded_w):.4f} (n={len(occluded_w)}), clean frames {np.mean(clean_w):.4f} "
          f"(n={len(clean_w)}), uniform 1/6 = {1 / 6:.4f}")

    # figure: one tracklet with both distractors, its read-strength maps and frame weights, and the two summaries
    pick = next((t for t, fl in enumerate(meta["test_flags"])
                 if any(fl["occluded"][f] for f in rrs_indices(len(tracks[t].paths), 6))
                 and any(fl["bar"][f] for f in rrs_indices(len(tracks[t].paths), 6))), 0)
    x = VideoDataset([tracks[pick]], 6, "rrs", video_transforms(size))[0][0]
    images = (x * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]).clamp(0, 1)
    fig = plt.figure(figsize=(11, 5.5))
    grid = fig.add_gridspec(2, 8)
    for i in range(6):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        ax.imshow(maps[pick, i].numpy(), cmap="magma", alpha=0.5, extent=(-0.5, size[1] - 0.5, size[0] - 0.5, -0.5),
                  vmin=0, vmax=float(maps[pick].max()))
        ax.set_title(f"w={float(weights[pick, i]):.2f}", fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, 0:4])
    ax.bar(["bar frames:\nat bar", "bar frames:\nelsewhere", "no-bar frames:\nat bar cols"],
           [np.mean(on_bar), np.mean(off_bar), np.mean(bar_cols_no_bar)], color=["C3", "C0", "C7"])
    ax.set_ylabel("spatial read |BN(r)|")
    ax = fig.add_subplot(grid[1, 4:8])
    ax.bar(["occluded", "clean"], [np.mean(occluded_w), np.mean(clean_w)], color=["C3", "C0"])
    ax.axhline(1 / 6, color="k", ls="--", lw=1, label="uniform")
    ax.set_ylabel("temporal frame weight")
    ax.legend()
    fig.suptitle("STMN on the synthetic set: spatial read strength over one tracklet (top, overlay) and summaries")
    fig.tight_layout()
    fig.savefig(args.figure, dpi=110)
    print(f"figure written to {args.figure}")


if __name__ == "__main__":
    main()
