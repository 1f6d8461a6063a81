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
    """{seed: metrics} of every finished run of `variant` (a VARIANTS name) in `folders`; a later folder wins."""
    index = list(VARIANTS).index(variant)
    out = {}
    for folder in folders:
        for run in sorted(folder.glob(f"{index}_s*")):
            seed = int(re.fullmatch(rf"{index}_s(\d+)", run.name).group(1))
            if any(run.glob("runs/cacl/version_*/metrics.csv")):
                try:
                    out[seed] = read_metrics(run)
                except IndexError:  # a run that stopped before its test epoch
                    continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="--out folders of ablation.py runs")
    parser.add_argument("--variant", choices=list(SHORT), default="cacl")
    parser.add_argument("--against", choices=list(SHORT), default="no-curriculum")
    parser.add_argument("--seeds", type=int, nargs="*", help="only these seeds (default: all found)")
    opts = parser.parse_args()
    if opts.variant == opts.against:
        raise SystemExit("--variant and --against must differ")
    first, other = finished(opts.folders, SHORT[opts.variant]), finished(opts.folders, SHORT[opts.against])
    seeds = sorted(set(first) & set(other) & set(opts.seeds if opts.seeds else first))
    if len(seeds) < 2:
        raise SystemExit(f"need at least two seeds with both variants finished, found {seeds}")
    diff = [first[s]["test/mAP"] - other[s]["test/mAP"] for s in seeds]
    mean, sd = statistics.mean(diff), statistics.stdev(diff)
    se = sd / len(diff) ** 0.5
    half = stats.t.ppf(0.975, len(diff) - 1) * se
    wins = sum(d > 0 for d in diff)
    ties = sum(d == 0 for d in diff)
    name, against = SHORT[opts.variant], SHORT[opts.against]
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
    print(f"- paired t-test (two-sided): p = {stats.ttest_1samp(diff, 0.0).pvalue:.4f}")
    print(f"- Wilcoxon signed-rank (two-sided): p = {stats.wilcoxon(diff).pvalue:.4f}")
    print(f"- sign test (two-sided): p = {stats.binomtest(wins, len(diff) - ties).pvalue:.4f}")


if __name__ == "__main__":
    main()
