"""The outcome of a search: every scored candidate, its proxies, its aggregated AZ score; saved as JSON and CSV."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from az_nas.aggregate import AZ_PROXIES, aggregate


@dataclass
class SearchResult:
    """Candidates (arch strings or config JSON) with their proxy scores; `az` aggregates `proxies` over all of them."""

    space: str
    candidates: list[str]
    scores: list[dict[str, float]]
    extra: dict[str, object] = field(default_factory=dict)
    proxies: tuple[str, ...] = AZ_PROXIES

    @property
    def az(self) -> np.ndarray:
        return aggregate(self.scores, self.proxies) if self.scores else np.zeros(0)

    @property
    def best(self) -> int:
        """Index of the chosen candidate (argmax of the aggregated score; first one on ties)."""
        return int(np.argmax(self.az))

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write `results.json` (everything) and `results.csv` (one row per candidate) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        az = self.az
        rows = [
            {"candidate": c, **{k: _finite(v) for k, v in s.items()}, "az_score": float(a)}
            for c, s, a in zip(self.candidates, self.scores, az)
        ]
        paths = {"json": folder / "results.json", "csv": folder / "results.csv"}
        payload = {"space": self.space, "proxies": list(self.proxies), "best": rows[self.best] if rows else None,
                   "extra": self.extra, "candidates": rows}
        paths["json"].write_text(json.dumps(payload, indent=1))
        with paths["csv"].open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["candidate"])
            writer.writeheader()
            writer.writerows(rows)
        return paths


def _finite(value: float) -> float | str:
    """JSON has no infinities: -inf is written as the string '-inf'."""
    return value if math.isfinite(value) else str(value)
