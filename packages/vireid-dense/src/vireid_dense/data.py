"""SYSU-MM01 / RegDB datamodule over the core's readers, sampler and protocols.

Training batches: `num_ids` identities x `num_pos` visible + `num_pos` infrared images per process
(`VIIdentitySampler`, rank-aware, so the trainer runs with `use_distributed_sampler=False`). Testing: every test
image is embedded once by the stem of its modality (each process a shard, gathered), then the protocol picks rows:
SYSU-MM01 all-search and indoor-search over `search_trials` galleries (single- or multi-shot), drawn as AGW / LbA
do (`random.seed(trial)`) or, with `gallery_order="official"`, by the official MATLAB evaluation's fixed
permutations (`rand_perm_cam.mat`); RegDB
visible->thermal and thermal->visible. With no `data_root`, a synthetic dataset in the real layout is written once
into the cache (`$CVLAB_CACHE/vireid_dense/...`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Subset

from cvlab_shared.data.cache import build_once, cache_dir
from cvlab_shared.data.checks import check_folder
from cvlab_shared.data.reid import ImageDataset, ReidRecord, reid_transforms
from cvlab_shared.data.synthetic_vi_reid import write_synthetic_regdb, write_synthetic_sysu
from cvlab_shared.data.vi_reid import (
    REGDB_LAYOUT,
    SYSU_LAYOUT,
    SYSU_PERMUTATION_FILE,
    SYSU_VISIBLE_CAMERAS,
    PairedVIDataset,
    SysuMM01,
    VIDatasetError,
    VIIdentitySampler,
    read_regdb,
    read_sysu_mm01,
)
from cvlab_shared.distributed import rank_and_world
from cvlab_shared.metrics.vi_reid import evaluate_regdb, evaluate_sysu_trials

DATASETS = ("sysu", "regdb")
GALLERY_ORDERS = ("random", "official")
SYSU_INFRARED_CAMIDS = (2, 5)


class VIReidDataModule(pl.LightningDataModule):
    """Visible-infrared re-ID data.

    Args:
        dataset: "sysu" (SYSU-MM01) or "regdb".
        data_root: folder holding `SYSU-MM01/` or `RegDB/`; None writes a synthetic one into the cache.
        trial: RegDB split, 1..10.
        image_size: (height, width) after resizing (288 x 144 in the paper).
        num_ids: identities per batch (8).
        num_pos: visible and infrared images per identity in a batch (4).
        num_batches: batches per epoch; None is the official max(#visible, #infrared) // (num_ids * num_pos) + 1.
        flip_p: horizontal-flip probability of the training transform.
        pad: padding before the random crop (0: the official crop is a no-op on pre-resized images).
        test_batch_size: batch size of feature extraction.
        num_workers: data-loading workers.
        search_trials: SYSU gallery trials averaged at test time (10).
        shots: SYSU gallery images per identity and camera (1 single-shot, 10 multi-shot).
        gallery_order: how each SYSU trial picks its gallery: "random" (AGW / LbA: `random.seed(trial)` and
            `random.choice` of the sorted files) or "official" (the first `shots` images of trial t's row of the
            official `rand_perm_cam.mat`, as the MATLAB `get_testing_set.m`).
        permutation_file: the `rand_perm_cam.mat` of `gallery_order="official"`; None is
            `SYSU-MM01/exp/rand_perm_cam.mat` (the synthetic set writes one there).
        synthetic_ids: identities of the synthetic set (SYSU: train + val + test; RegDB: both halves).
        synthetic_images: images per identity and camera of the synthetic set.
        seed: sampler seed (the synthetic data always uses seed 0).
    """

    def __init__(
        self,
        dataset: str = "sysu",
        data_root: str | None = None,
        trial: int = 1,
        image_size: tuple[int, int] = (288, 144),
        num_ids: int = 8,
        num_pos: int = 4,
        num_batches: int | None = None,
        flip_p: float = 0.5,
        pad: int = 0,
        test_batch_size: int = 128,
        num_workers: int = 4,
        search_trials: int = 10,
        shots: int = 1,
        gallery_order: str = "random",
        permutation_file: str | None = None,
        synthetic_ids: int = 48,
        synthetic_images: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
        if not isinstance(trial, int) or not 1 <= trial <= 10:
            raise VIDatasetError(f"data.trial (the RegDB split) must be an integer in 1..10, got {trial!r}")
        if gallery_order not in GALLERY_ORDERS:
            raise ValueError(f"data.gallery_order must be one of {GALLERY_ORDERS}, got {gallery_order!r}")
        self.save_hyperparameters()
        self.train_visible: list[ReidRecord] = []
        self.train_thermal: list[ReidRecord] = []
        self.test_records: list[ReidRecord] = []
        self.test_infrared: list[bool] = []
        self.num_classes = 0
        self.sysu: SysuMM01 | None = None
        self.permutations: dict[tuple[int, int], list[list[int]]] | None = None

    # ---- data on disk ---------------------------------------------------------------------------------------------
    def root(self) -> Path:
        """The dataset root: `data_root`, or the synthetic set in the cache (written on first use)."""
        h = self.hparams
        if h.data_root is not None:
            return Path(h.data_root)
        size = tuple(h.image_size)
        if h.dataset == "sysu":
            n = h.synthetic_ids
            spec = dict(num_train_ids=n // 2, num_val_ids=n // 6, num_test_ids=n - n // 2 - n // 6,
                        images_per_cam=h.synthetic_images, image_size=size, seed=0)
            write = lambda folder: write_synthetic_sysu(folder, **spec)
        else:
            spec = dict(num_ids=h.synthetic_ids, images_per_id=h.synthetic_images, image_size=size, seed=0)
            write = lambda folder: write_synthetic_regdb(folder, **spec)
        # the layout tag renews the cache folder of sets written before the writer added exp/rand_perm_cam.mat
        layout = [h.dataset, spec] + ([SYSU_PERMUTATION_FILE] if h.dataset == "sysu" else [])
        key = hashlib.sha1(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:10]
        return build_once(cache_dir("vireid_dense") / f"synthetic_{h.dataset}_{key}", write)

    def check_data(self, stage: str = "fit") -> None:
        """A given `data_root` exists and holds the dataset's layout: the real SYSU-MM01 / RegDB readers run on it
        (read-only; the CLI calls this before any model is built, and `setup` keeps what was read). The synthetic
        default (no `data_root`) is written later, in `prepare_data`."""
        h = self.hparams
        if h.data_root is None:
            return
        layout = SYSU_LAYOUT if h.dataset == "sysu" else REGDB_LAYOUT
        check_folder(h.data_root, "--data.data_root", layout)
        self.setup(stage)  # the readers name the missing file or folder and say what they expected

    def prepare_data(self) -> None:
        self.root()

    def setup(self, stage: str | None = None) -> None:
        if self.train_visible:
            return
        h = self.hparams
        if h.dataset == "sysu":
            self.sysu = read_sysu_mm01(self.root())
            if h.gallery_order == "official":
                self.permutations = self.sysu.read_permutations(h.permutation_file, trials=h.search_trials)
            visible, thermal = self.sysu.train_visible, self.sysu.train_thermal
            query = self.sysu.query("all")
            pool = [
                ReidRecord(p, pid, cam - 1)
                for pid in self.sysu.test_ids
                for cam in SYSU_VISIBLE_CAMERAS
                for p in self.sysu.files(cam, pid)
            ]
            self.test_records = query + pool
            self.test_infrared = [r.camid in SYSU_INFRARED_CAMIDS for r in self.test_records]
        else:
            split = read_regdb(self.root(), h.trial)
            visible, thermal = split.train_visible, split.train_thermal
            self.test_records = split.test_visible + split.test_thermal
            self.test_infrared = [False] * len(split.test_visible) + [True] * len(split.test_thermal)
        mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in visible + thermal}))}
        self.train_visible = [ReidRecord(r.path, mapping[r.pid], r.camid) for r in visible]
        self.train_thermal = [ReidRecord(r.path, mapping[r.pid], r.camid) for r in thermal]
        self.num_classes = len(mapping)

    # ---- loaders --------------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        transform = reid_transforms(True, size=tuple(h.image_size), flip_p=h.flip_p, pad=h.pad, erasing_p=0.0)
        dataset = PairedVIDataset(self.train_visible, self.train_thermal, transform)
        sampler = VIIdentitySampler(
            [r.pid for r in self.train_visible],
            [r.pid for r in self.train_thermal],
            h.num_ids,
            h.num_pos,
            seed=h.seed,
            num_batches=h.num_batches,
        )
        return DataLoader(
            dataset, batch_size=h.num_ids * h.num_pos, sampler=sampler, num_workers=h.num_workers, drop_last=True
        )

    def test_loader(self) -> DataLoader:
        """This process's shard (every world-th image) of the test images; batches carry the record index."""
        rank, world = rank_and_world()
        dataset = ImageDataset(self.test_records, reid_transforms(False, size=tuple(self.hparams.image_size)))
        return DataLoader(
            Subset(dataset, range(rank, len(dataset), world)),
            batch_size=self.hparams.test_batch_size,
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.test_loader()

    def test_dataloader(self) -> DataLoader:
        return self.test_loader()

    # ---- protocol -------------------------------------------------------------------------------------------------
    def sysu_gallery(self, mode: str, trial: int) -> list[ReidRecord]:
        """The SYSU visible gallery of one trial, in `gallery_order`."""
        return self.sysu.gallery(mode, trial, self.hparams.shots, self.permutations)

    def evaluate(self, feats: torch.Tensor) -> dict[str, float]:
        """Protocol metrics from the features of `test_records` (in order): SYSU `all_*` and `indoor_*` (means
        over the trials), RegDB `v2t_*` and `t2v_*`."""
        recs = self.test_records
        out: dict[str, float] = {}
        if self.sysu is not None:
            n_query = sum(self.test_infrared)
            row = {r.path: i for i, r in enumerate(recs)}
            q_pids = [r.pid for r in recs[:n_query]]
            q_cams = [r.camid + 1 for r in recs[:n_query]]
            for mode in ("all", "indoor"):

                def gallery(t: int, mode: str = mode):
                    chosen = self.sysu_gallery(mode, t)
                    idx = torch.tensor([row[r.path] for r in chosen], device=feats.device)
                    return feats[idx], [r.pid for r in chosen], [r.camid + 1 for r in chosen]

                res = evaluate_sysu_trials(feats[:n_query], q_pids, q_cams, gallery, self.hparams.search_trials)
                out |= {f"{mode}_{k}": v for k, v in res.items() if k != "trials"}
            return out
        infrared = torch.tensor(self.test_infrared, device=feats.device)
        pids = torch.tensor([r.pid for r in recs])
        vis, ir = (~infrared).nonzero()[:, 0], infrared.nonzero()[:, 0]
        for name, q, g in (("v2t", vis, ir), ("t2v", ir, vis)):
            res = evaluate_regdb(feats[q], feats[g], pids[q.cpu()].tolist(), pids[g.cpu()].tolist())
            out |= {f"{name}_{k}": v for k, v in res.items()}
        return out
