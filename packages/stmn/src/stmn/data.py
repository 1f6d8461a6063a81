"""Tracklet data for STMN: the core's video readers (MARS, DukeMTMC-VideoReID, LS-VID) or the synthetic MARS set,
identity batches of P ids x K tracklets x S frames for training, and the RRS / all-frames test loaders.

With `dataset="synthetic"` the synthetic set is written once into the cache (`$CVLAB_CACHE/stmn/...`, one folder per
setting) unless `data_root` names a folder. `check_data` (run by the CLI before any model or run folder) reads a real
dataset, or an existing synthetic `data_root`, so a bad root fails with one line naming the folder and the layout.
All loaders are rank-aware: run with `trainer.use_distributed_sampler=false`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Sampler, Subset

from cvlab_shared.data.cache import build_once, cache_dir
from cvlab_shared.data.checks import InputError, check_folder
from cvlab_shared.data.synthetic_video import write_synthetic_video
from cvlab_shared.data.video import (
    DUKEV_LAYOUT,
    LSVID_LAYOUT,
    MARS_LAYOUT,
    Tracklet,
    VideoDataset,
    VideoSplit,
    collate_clips,
    read_video_dataset,
    relabel_tracklets,
    video_transforms,
)
from cvlab_shared.distributed import rank_and_world


LAYOUTS = {"synthetic": MARS_LAYOUT, "mars": MARS_LAYOUT, "dukev": DUKEV_LAYOUT, "lsvid": LSVID_LAYOUT}


class IdentityBatchSampler(Sampler[int]):
    """Official STMN batches (`cam_type='normal'`): each pass shuffles the identities, cuts them into groups of P,
    and draws K tracklets per identity with replacement. An epoch is one pass (or `iters` batches per process when
    given). Under DDP the batches of the same seeded sequence are dealt out round-robin, so each process holds a
    different P x K batch. Call `set_epoch` (Lightning does) for a new order each epoch."""

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0, iters: int | None = None) -> None:
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.by_pid[int(pid)].append(i)
        if len(self.by_pid) < p:
            raise ValueError(f"{len(self.by_pid)} training identities is fewer than class_per_batch={p}")
        self.p, self.k, self.seed, self.iters, self.epoch = p, k, seed, iters, 0
        self.rank, self.world = rank_and_world()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + self.epoch)
        ids = sorted(self.by_pid)
        wanted = None if self.iters is None else self.iters * self.world
        batches: list[list[int]] = []
        while True:
            rng.shuffle(ids)
            for start in range(0, len(ids) - self.p + 1, self.p):
                batches.append([i for pid in ids[start : start + self.p] for i in rng.choices(self.by_pid[pid], k=self.k)])
            if wanted is None or len(batches) >= wanted:
                break
        usable = wanted if wanted is not None else len(batches) - len(batches) % self.world
        return batches[self.rank : usable : self.world]

    def __iter__(self) -> Iterator[int]:
        for batch in self._batches():
            yield from batch

    def __len__(self) -> int:
        return len(self._batches()) * self.p * self.k


class StmnDataModule(pl.LightningDataModule):
    """Video re-ID data for STMN.

    Args:
        dataset: "synthetic", "mars", "dukev" or "lsvid".
        data_root: the dataset folder (or its parent); for "synthetic" an optional folder to write into.
        seq_len: frames per tracklet S (6).
        image_size: (height, width) of the frames.
        class_per_batch: identities P per batch (8).
        track_per_class: tracklets K per identity (4); the batch is P x K tracklets per process.
        iters: batches per epoch and process (None: one pass over the identities, as the official code).
        test_batch_size: tracklets per evaluation batch.
        num_workers: data-loading workers.
        flip_p: probability of flipping a whole training tracklet.
        erasing_p: per-frame random-erasing probability.
        synthetic_train_ids, synthetic_test_ids, synthetic_cams, synthetic_max_frames, synthetic_seed: the
            synthetic set's size (tracklets of 1 to synthetic_max_frames frames) and seed.
        seed: sampler seed.
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        data_root: str | None = None,
        seq_len: int = 6,
        image_size: tuple[int, int] = (256, 128),
        class_per_batch: int = 8,
        track_per_class: int = 4,
        iters: int | None = None,
        test_batch_size: int = 16,
        num_workers: int = 0,
        flip_p: float = 0.5,
        erasing_p: float = 0.5,
        synthetic_train_ids: int = 32,
        synthetic_test_ids: int = 24,
        synthetic_cams: int = 4,
        synthetic_max_frames: int = 40,
        synthetic_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.split: VideoSplit | None = None
        self.train_tracks: list[Tracklet] = []
        self.num_classes = 0

    def check_data(self, stage: str = "fit") -> None:
        """Read-only input check (the CLI runs it before any model is built; `setup` keeps what was read): a real
        dataset's `data_root` must hold its layout (the core's readers name the missing file); a synthetic `data_root`
        may be new or empty (the set is written there in `prepare_data`), else it must hold a synthetic MARS set."""
        h = self.hparams
        layout = LAYOUTS.get(h.dataset, "the dataset's layout (the package README shows it)")
        if h.dataset == "synthetic":
            root = Path(h.data_root).expanduser() if h.data_root else None
            if root is None or not root.exists() or (root.is_dir() and not any(root.iterdir())):
                return
            check_folder(root, "--data.data_root", f"a new or empty folder for the synthetic set, or {layout}")
            if not (root / "MARS" / "info").is_dir():
                raise InputError(
                    f"--data.data_root {root} holds other files and no synthetic set; expected a new or empty folder "
                    f"to write it into, or {MARS_LAYOUT}"
                )
        elif not h.data_root:
            raise InputError(f"--data.dataset {h.dataset} needs --data.data_root; expected layout: {layout}")
        else:
            check_folder(h.data_root, "--data.data_root", layout)
        self.setup(stage)  # the core's readers name the missing file and the expected layout

    def _synthetic_settings(self) -> dict:
        h = self.hparams
        return dict(
            layout="mars",
            num_train_ids=h.synthetic_train_ids,
            num_test_ids=h.synthetic_test_ids,
            num_cams=h.synthetic_cams,
            max_frames=h.synthetic_max_frames,
            image_size=tuple(h.image_size),
            seed=h.synthetic_seed,
        )

    def synthetic_root(self) -> Path:
        """Where the synthetic set lives: `data_root` or a cache folder named by the settings."""
        if self.hparams.data_root:
            return Path(self.hparams.data_root)
        digest = hashlib.sha1(json.dumps(self._synthetic_settings(), sort_keys=True).encode()).hexdigest()[:10]
        return cache_dir("stmn") / f"synthetic-{digest}"

    def prepare_data(self) -> None:
        if self.hparams.dataset == "synthetic":
            root = self.synthetic_root()
            if not (root / "MARS" / "info").is_dir():
                print(f"writing the synthetic video set to {root}", flush=True)
                build_once(root, lambda tmp: write_synthetic_video(tmp, **self._synthetic_settings()))

    def _use(self, split: VideoSplit) -> None:
        self.split = split
        self.train_tracks, mapping = relabel_tracklets(split.train)
        self.num_classes = len(mapping)

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        h = self.hparams
        if h.dataset == "synthetic":
            self._use(read_video_dataset("mars", self.synthetic_root()))
        else:
            self._use(read_video_dataset(h.dataset, h.data_root))

    def synthetic_meta(self) -> dict | None:
        """The synthetic set's metadata (per-frame distractor flags), or None for real data."""
        meta = self.synthetic_root() / "MARS" / "synthetic_meta.json"
        if self.hparams.dataset != "synthetic" or not meta.is_file():
            return None
        return json.loads(meta.read_text())

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        dataset = VideoDataset(
            self.train_tracks, h.seq_len, "rrs_train", video_transforms(tuple(h.image_size)), h.flip_p, h.erasing_p
        )
        sampler = IdentityBatchSampler(
            [t.pid for t in self.train_tracks], h.class_per_batch, h.track_per_class, h.seed, h.iters
        )
        return DataLoader(
            dataset,
            batch_size=h.class_per_batch * h.track_per_class,
            sampler=sampler,
            drop_last=True,
            num_workers=h.num_workers,
        )

    def eval_loader(self, protocol: str) -> DataLoader:
        """This process's shard (every world-th tracklet) of the test set under "rrs" or "all"."""
        h = self.hparams
        rank, world = rank_and_world()
        dataset = VideoDataset(self.split.test, h.seq_len, protocol, video_transforms(tuple(h.image_size)))
        return DataLoader(
            Subset(dataset, range(rank, len(dataset), world)),
            batch_size=h.test_batch_size,
            num_workers=h.num_workers,
            collate_fn=collate_clips if protocol == "all" else None,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("rrs")

    def test_dataloader(self) -> list[DataLoader]:
        return [self.eval_loader("rrs"), self.eval_loader("all")]
