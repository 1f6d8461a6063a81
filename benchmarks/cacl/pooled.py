"""Pool finished `ablation.py` runs from several --out folders and compare two variants, paired by seed.

Reads every `<variant>_s<seed>` folder that `ablation.py` wrote (nothing is trained here), keeps the seeds on which
both variants finished, and prints the paired mAP difference (mean, standard error, 95% interval), the seeds on
which the first is higher, a two-sided paired t-test, the Wilcoxon signed-rank test and the sign test, plus the last
epoch's pseudo-label statistics of both variants (ARI with the true identities, cameras per cluster).

    uv run python benchmarks/cacl/pooled.py /tmp/cacl_ablation /tmp/cacl_ablation_more --against no-curriculum
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import SHORT, VARIANTS, read_metrics  # noqa: E402


def finished(folders: list[Path], variant: str) -> dict[int, dict[str, float]]:
    """{seed: metrics} of every finished run of `variant` (a VARIANTS name or "source-only") in `folders`; a later
    folder wins."""
    prefix = "source" if variant == "source-only" else str(list(VARIANTS).index(variant))
    out = {}
    for folder in folders:
        for run in sorted(folder.glob(f"{prefix}_s*")):
            seed = int(re.fullmatch(rf"{prefix}_s(\d+)", run.name).group(1))
            if any(run.glob("runs/cacl/version_*/metrics.csv")):
                try:
                    out[seed] = read_metrics(run)
                except IndexError:  # a run that stopped before its test epoch
                    continue
    return out


def plot(path: Path, x: list[float], y: list[float], xlabel: str, ylabel: str, title: str) -> None:
    """Scatter of paired per-seed mAP with the y = x line, and a histogram of the differences."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax, hist = fig.subplots(1, 2)
    top = max(x + y) * 1.05
    ax.plot([0, top], [0, top], color="grey", lw=1)
    ax.scatter(x, y, s=14)
    ax.set(xlabel=f"{xlabel}: mAP", ylabel=f"{ylabel}: mAP", xlim=(0, top), ylim=(0, top), title="one dot per seed")
    diff = [b - a for a, b in zip(x, y)]
    hist.hist(diff, bins=20)
    hist.axvline(0, color="grey", lw=1)
    hist.axvline(statistics.mean(diff), color="C3", lw=2, label=f"mean {statistics.mean(diff):+.3f}")
    hist.set(xlabel=f"mAP difference ({ylabel} - {xlabel})", ylabel="seeds", title=title)
    hist.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def p_value(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="--out folders of ablation.py runs")
    parser.add_argument("--variant", choices=list(SHORT), default="cacl")
    parser.add_argument("--against", choices=[*SHORT, "source-only"], default="no-curriculum")
    parser.add_argument("--seeds", type=int, nargs="*", help="only these seeds (default: all found)")
    parser.add_argument("--plot", type=Path, help="write a PNG: per-seed mAP of one variant against the other")
    opts = parser.parse_args()
    if opts.variant == opts.against:
        raise SystemExit("--variant and --against must differ")
    name, against = SHORT[opts.variant], SHORT.get(opts.against, opts.against)
    first, other = finished(opts.folders, name), finished(opts.folders, against)
    seeds = sorted(set(first) & set(other) & set(opts.seeds if opts.seeds else first))
    if len(seeds) < 2:
        raise SystemExit(f"need at least two seeds with both variants finished, found {seeds}")
    diff = [first[s]["test/mAP"] - other[s]["test/mAP"] for s in seeds]
    mean, sd = statistics.mean(diff), statistics.stdev(diff)
    se = sd / len(diff) ** 0.5
    half = stats.t.ppf(0.975, len(diff) - 1) * se
    wins = sum(d > 0 for d in diff)
    ties = sum(d == 0 for d in diff)
    print(f"{name} vs {against}: {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), target test mAP, paired by seed")
    for label, runs in ((name, first), (against, other)):
        maps = [runs[s]["test/mAP"] for s in seeds]
        r1 = [runs[s]["test/rank1"] for s in seeds]
        ari = [runs[s]["cluster/ari"] for s in seeds if "cluster/ari" in runs[s]]
        cams = [runs[s]["cluster/cams_per_cluster"] for s in seeds if "cluster/cams_per_cluster" in runs[s]]
        line = f"- {label}: mAP {statistics.mean(maps):.3f} ± {statistics.stdev(maps):.3f} (sd)"
        line += f", rank-1 {statistics.mean(r1):.3f}"
        if ari:
            line += f"; last epoch pseudo labels: ARI {statistics.mean(ari):.3f}"
            line += f", cameras/cluster {statistics.mean(cams):.2f}"
        print(line)
    print(f"- difference: {mean:+.4f} mAP, sd {sd:.4f}, standard error {se:.4f}", end="")
    print(f", 95% interval [{mean - half:+.4f}, {mean + half:+.4f}]")
    print(f"- {opts.variant} higher on {wins}/{len(diff)} seeds ({ties} ties)")
    print(f"- paired t-test (two-sided): p = {p_value(stats.ttest_1samp(diff, 0.0).pvalue)}")
    print(f"- Wilcoxon signed-rank (two-sided): p = {p_value(stats.wilcoxon(diff).pvalue)}")
    print(f"- sign test (two-sided): p = {p_value(stats.binomtest(wins, len(diff) - ties).pvalue)}")
    if opts.plot:
        x, y = [other[s]["test/mAP"] for s in seeds], [first[s]["test/mAP"] for s in seeds]
        plot(opts.plot, x, y, opts.against, opts.variant, f"{len(seeds)} seeds, paired")
        print(f"plot: {opts.plot}")


if __name__ == "__main__":
    main()
