"""A query and its top-5 gallery detections with their boxes (green: the true match, red: wrong), one PNG per query."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from cvlab_shared.data.person_search import PersonSearchData  # noqa: E402
from cvlab_shared.metrics.person_search import SearchResult  # noqa: E402


def _show(ax, path: str, box, colour: str, title: str) -> None:
    with Image.open(path) as im:
        ax.imshow(im.convert("RGB"))
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=2))
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_rankings(data: PersonSearchData, result: SearchResult, folder: str | Path, count: int = 3) -> list[Path]:
    """Save `count` figures (query + its top-5 hits) under `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path_of = {s.name: s.path for s in data.gallery}
    paths = []
    for ranking in result.ranked[:count]:
        q = data.queries[ranking["query"]]
        fig, axes = plt.subplots(1, 6, figsize=(15, 3))
        _show(axes[0], q.path, q.box, "blue", f"query {ranking['query']} (pid {q.pid})")
        for ax in axes[1:]:
            ax.axis("off")
        for k, (name, box, score, ok) in enumerate(
            zip(ranking["images"], ranking["boxes"], ranking["scores"], ranking["correct"])
        ):
            _show(axes[k + 1], path_of[name], box, "green" if ok else "red", f"top-{k + 1} {score:.2f}")
        out = folder / f"query_{ranking['query']:05d}.png"
        fig.savefig(out, dpi=80, bbox_inches="tight")
        plt.close(fig)
        paths.append(out)
    return paths
