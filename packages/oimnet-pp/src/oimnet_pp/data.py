"""Person-search data for OIMNet++: CUHK-SYSU / PRW over the core's readers, or the core's synthetic scenes.

`dataset="synthetic_cuhk"` (or `"synthetic_prw"`) writes the synthetic scenes once, in the real CUHK-SYSU (PRW)
layout, into the cache (`$CVLAB_CACHE/oimnet_pp/...`) or into `data_root` when given, and then reads them with the
same reader as the real dataset. Training batches are lists of images and targets {"boxes" xyxy, "labels" pids}
(5555 = unlabelled); the gallery and query loaders shard over DDP ranks without padding.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cvlab_shared.data.cache import build_once, cache_dir
from cvlab_shared.data.checks import InputError, check_folder
from cvlab_shared.data.person_search import (
    CUHK_LAYOUT,
    PRW_LAYOUT,
    PersonSearchData,
    QueryRecord,
    SceneDataset,
    collate_scenes,
    read_person_search,
)
from cvlab_shared.data.samplers import ShuffledShardSampler, UnpaddedShardSampler
from cvlab_shared.data.synthetic_person_search import scene_plan, write_cuhk_sysu, write_prw
from cvlab_shared.distributed import rank_and_world

DATASETS = ("synthetic_cuhk", "synthetic_prw", "cuhk_sysu", "prw")


class QueryDataset(Dataset):
    """Query images with their box: (image (3, H, W) in [0, 1], box (1, 4) xyxy, index)."""

    def __init__(self, queries: list[QueryRecord]) -> None:
        self.queries = queries

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, i: int):
        q = self.queries[i]
        with Image.open(q.path) as im:
            image = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
        return image, torch.as_tensor(q.box, dtype=torch.float32).reshape(1, 4), i


def collate_queries(batch):
    images, boxes, index = zip(*batch)
    return list(images), list(boxes), torch.tensor(index)


class PersonSearchDataModule(pl.LightningDataModule):
    """CUHK-SYSU, PRW or their synthetic stand-ins.

    Args:
        dataset: "synthetic_cuhk" (default), "synthetic_prw", "cuhk_sysu" or "prw".
        data_root: folder holding the dataset (`CUHK-SYSU/` or `PRW-v16.04.20/`, or the folder itself); for the
            synthetic sets, where to write them (default: the cache).
        batch_size: training images per process (5 in the paper).
        test_batch_size: gallery / query images per step.
        num_workers: data-loading workers.
        hflip: random horizontal flip of training images (the paper's only augmentation).
        seed: shuffling / flip seed.
        synthetic_seed, synthetic_train_ids, synthetic_test_ids, synthetic_train_images, synthetic_test_images,
        synthetic_cams: the synthetic scene plan (see `cvlab_shared.data.synthetic_person_search.scene_plan`).
        synthetic_gallery_sizes: TestG sizes written for the synthetic CUHK layout (TestG50 always).
        check_boxes: read every image header and check the boxes lie inside (fails early with the file named).
    """

    def __init__(
        self,
        dataset: str = "synthetic_cuhk",
        data_root: str | None = None,
        batch_size: int = 5,
        test_batch_size: int = 1,
        num_workers: int = 0,
        hflip: bool = True,
        seed: int = 0,
        synthetic_seed: int = 0,
        synthetic_train_ids: int = 20,
        synthetic_test_ids: int = 10,
        synthetic_train_images: int = 40,
        synthetic_test_images: int = 16,
        synthetic_cams: int = 3,
        synthetic_gallery_sizes: tuple[int, ...] = (5, 10),
        check_boxes: bool = True,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
        self.save_hyperparameters()
        self.data: PersonSearchData | None = None
        self.train_set: SceneDataset | None = None

    # ---- files ----------------------------------------------------------------------------------------------
    def _synthetic_settings(self) -> dict:
        h = self.hparams
        return {
            "seed": h.synthetic_seed,
            "num_train_ids": h.synthetic_train_ids,
            "num_test_ids": h.synthetic_test_ids,
            "num_train_images": h.synthetic_train_images,
            "num_test_images": h.synthetic_test_images,
            "num_cams": h.synthetic_cams,
        }

    def root(self) -> Path:
        """Where the dataset is read from (the synthetic one is written there first)."""
        h = self.hparams
        if not h.dataset.startswith("synthetic"):
            if not h.data_root:
                raise FileNotFoundError(f"data.data_root is required for data.dataset={h.dataset}")
            return Path(h.data_root)
        layout = h.dataset.split("_", 1)[1]
        settings = self._synthetic_settings() | {"layout": layout, "gallery_sizes": list(h.synthetic_gallery_sizes)}
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        base = Path(h.data_root) if h.data_root else cache_dir("oimnet_pp")
        return base / f"synthetic_{layout}_{digest}"

    def check_data(self, stage: str = "fit") -> None:
        """Called by the CLI before any model is built (reads, never writes). A real dataset (`cuhk_sysu`, `prw`) needs
        `data_root` holding its layout, and is read here (`setup` keeps what was read: the readers name the missing
        file and the expected layout). For the synthetic sets `data_root` is where they are written, so it may not
        exist yet, but must not be a file."""
        h = self.hparams
        layout = PRW_LAYOUT if h.dataset.endswith("prw") else CUHK_LAYOUT
        if h.dataset.startswith("synthetic"):
            if h.data_root and Path(h.data_root).expanduser().exists() and not Path(h.data_root).expanduser().is_dir():
                raise InputError(f"--data.data_root {h.data_root} is not a folder; expected the folder to write the "
                                 f"synthetic {h.dataset} scenes into (default: the cache)")
            return
        if not h.data_root:
            raise InputError(f"--data.data_root is required for --data.dataset {h.dataset}; expected layout: {layout}")
        check_folder(h.data_root, "--data.data_root", layout)
        try:
            self.setup(stage)
        except (FileNotFoundError, ValueError) as err:
            raise InputError(f"--data.data_root {h.data_root}: {err}") from None

    def prepare_data(self) -> None:
        h = self.hparams
        if not h.dataset.startswith("synthetic"):
            return
        root = self.root()

        def write(folder: Path) -> None:
            print(f"writing the synthetic {h.dataset} scenes to {root}", flush=True)
            plan = scene_plan(**self._synthetic_settings())
            if h.dataset == "synthetic_cuhk":
                write_cuhk_sysu(folder, plan, tuple(h.synthetic_gallery_sizes))
            else:
                write_prw(folder, plan)

        build_once(root, write)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        h = self.hparams
        if h.dataset.startswith("synthetic"):
            self.prepare_data()  # idempotent; covers runs where Lightning skipped prepare_data on this rank
        name = {"synthetic_cuhk": "cuhk_sysu", "synthetic_prw": "prw"}.get(h.dataset, h.dataset)
        self.data = read_person_search(name, self.root(), check=h.check_boxes)
        self.train_set = SceneDataset(self.data.train, hflip=h.hflip, seed=h.seed)

    @property
    def num_train_pids(self) -> int:
        assert self.data is not None, "call setup() first"
        return self.data.num_train_pids

    # ---- loaders --------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        rank, world = rank_and_world()
        sampler = ShuffledShardSampler(self.train_set, num_replicas=world, rank=rank, seed=self.hparams.seed)
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=self.hparams.num_workers,
            collate_fn=collate_scenes,
        )

    def gallery_loader(self) -> DataLoader:
        rank, world = rank_and_world()
        dataset = SceneDataset(self.data.gallery)
        return DataLoader(
            dataset,
            batch_size=self.hparams.test_batch_size,
            sampler=UnpaddedShardSampler(dataset, world, rank),
            num_workers=self.hparams.num_workers,
            collate_fn=collate_scenes,
        )

    def query_loader(self) -> DataLoader:
        rank, world = rank_and_world()
        dataset = QueryDataset(self.data.queries)
        return DataLoader(
            dataset,
            batch_size=self.hparams.test_batch_size,
            sampler=UnpaddedShardSampler(dataset, world, rank),
            num_workers=self.hparams.num_workers,
            collate_fn=collate_queries,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [self.gallery_loader(), self.query_loader()]

    def test_dataloader(self) -> list[DataLoader]:
        return [self.gallery_loader(), self.query_loader()]
