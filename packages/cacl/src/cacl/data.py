"""Source (labelled) + target (unlabelled, with camera labels) datamodule over the core's re-ID readers.

`dataset="synthetic"` writes (once, in `prepare_data`, into the cache `$CVLAB_CACHE/synthetic/cacl_...`, or into the
`source_root` / `target_root` given) a deterministic source/target pair with the core's synthetic writer: the source
is rendered without camera shift, the target's cameras are shifted by graded amounts in a known order (the scheduler
test's ground truth). Real datasets are checked (`check_data`) before anything is built or written.
The training loaders are rebuilt every epoch (`reload_dataloaders_every_n_epochs=1`): source batches always and, in
adaptation epochs, target batches over the pseudo-labelled images of the current camera stage. The target batches are
drawn lazily from the module's `plan`, which its `on_train_epoch_start` hook sets after clustering. All samplers are
rank-aware, so the trainer runs with `use_distributed_sampler=False`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import CombinedLoader
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from cvlab_shared.data.cache import cache_dir
from cvlab_shared.data.checks import InputError, open_rgb
from cvlab_shared.data.reid import (
    READERS,
    ImageDataset,
    PKSampler,
    ReidRecord,
    read_reid_dataset,
    reid_transforms,
    relabel,
)
from cvlab_shared.data.synthetic_reid import write_synthetic_reid
from cvlab_shared.distributed import rank_and_world


class RepeatedPKSampler(PKSampler):
    """P x K batches drawn from back-to-back PKSampler epochs until each process has exactly `iters` batches.

    Cluster-Contrast and SpCL train a fixed number of iterations per epoch whatever the number of clusters. The
    batches are drawn for all processes at once (same seed everywhere) and dealt out round-robin, so a small
    camera subset with a single P x K batch per pass still feeds every process.
    """

    def __init__(self, pids, p: int, k: int, iters: int, seed: int = 0) -> None:
        super().__init__(pids, p, k, seed=seed, num_replicas=1, rank=0)
        self.iters = iters
        self.process, self.processes = rank_and_world()

    def __iter__(self):
        needed, batches, sub_epoch, base = self.iters * self.processes, [], 0, self.epoch
        while len(batches) < needed:
            self.epoch = base * 1000 + sub_epoch
            drawn = self._batches()
            if not drawn:
                raise ValueError(f"too few images or identities for one P x K = {self.p} x {self.k} batch")
            batches += drawn
            sub_epoch += 1
        self.epoch = base
        for batch in batches[self.process : needed : self.processes]:
            yield from batch

    def __len__(self) -> int:
        return self.iters * self.p * self.k


class PseudoLabelled(Dataset):
    """Target training images by index into `records`, with the pid replaced by the current `labels[index]`."""

    def __init__(self, records: list[ReidRecord], transform) -> None:
        self.images = ImageDataset(records, transform)
        self.labels: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image, _, camid, idx = self.images[index]
        return image, self.labels.get(index, -1), camid, idx


class PlanBatchSampler:
    """`iters` P x K batches of target indices drawn, when iterated, from the module's current plan.

    The loader is built before the epoch starts; the module clusters in `on_train_epoch_start` and sets
    `plan = (target indices, pseudo labels)` (or None: fewer than two clusters, the batches are then single
    placeholder images the training step ignores). Reading the plan lazily keeps clustering in a module hook.
    """

    def __init__(self, module, dataset: PseudoLabelled, batch_p: int, batch_k: int, iters: int, seed: int) -> None:
        self.module, self.dataset = module, dataset
        self.batch_p, self.batch_k, self.iters, self.seed, self.epoch = batch_p, batch_k, iters, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.iters

    def __iter__(self):
        plan = getattr(self.module, "plan", None)
        if plan is None:
            for _ in range(self.iters):
                yield [0]
            return
        indices, labels = plan
        self.dataset.labels = dict(zip(indices, labels))
        p = min(self.batch_p, len(set(labels)))
        sampler = RepeatedPKSampler(labels, p, self.batch_k, self.iters, seed=self.seed)
        sampler.set_epoch(self.epoch)
        positions = list(sampler)
        size = p * self.batch_k
        for start in range(0, len(positions) - size + 1, size):
            yield [indices[j] for j in positions[start : start + size]]


def relabelled(records: list[ReidRecord], labels: list[int]) -> list[ReidRecord]:
    """The records with their pid replaced by `labels` (source identities or target pseudo labels)."""
    return [ReidRecord(r.path, int(y), r.camid) for r, y in zip(records, labels)]


class CaclDataModule(pl.LightningDataModule):
    """Source and target re-ID data for CaCL.

    Args:
        source: "synthetic" or a reader name (market1501, dukemtmc, msmt17, personx).
        target: same choices as `source`.
        source_root: folder holding the source dataset (synthetic: where to write it; default: the cache
            `$CVLAB_CACHE/synthetic/cacl_<settings>/source`, i.e. ~/.cache/cvlab/...).
        target_root: folder holding the target dataset (synthetic: as source_root, `.../target`).
        image_size: (height, width) after resizing.
        batch_p: identities (or clusters) per batch; batch size is batch_p * batch_k per process and domain.
        batch_k: images per identity in a batch.
        iters: training iterations per epoch.
        test_batch_size: batch size for feature extraction.
        num_workers: data-loading workers.
        erasing_p: random-erasing probability in the training transform.
        synthetic_ids: training (and test) identities of each synthetic domain.
        synthetic_cams: target cameras of the synthetic pair (the source has 4).
        synthetic_images_per_cam: images per identity and camera.
        synthetic_shift: strength of the graded target camera shift (0 = no shift).
        synthetic_bias: per-camera style offset making clusters camera-biased.
        seed: sampler seed (the synthetic data always uses seeds 1 and 2).
        verify: before training, decode every image of the real datasets (finds a truncated or damaged file, named
            in the error, before any model is built; takes a while on full datasets).
    """

    def __init__(
        self,
        source: str = "synthetic",
        target: str = "synthetic",
        source_root: str | None = None,
        target_root: str | None = None,
        image_size: tuple[int, int] = (64, 32),
        batch_p: int = 8,
        batch_k: int = 4,
        iters: int = 20,
        test_batch_size: int = 128,
        num_workers: int = 0,
        erasing_p: float = 0.5,
        synthetic_ids: int = 48,
        synthetic_cams: int = 6,
        synthetic_images_per_cam: int = 3,
        synthetic_shift: float = 1.0,
        synthetic_bias: float = 0.3,
        seed: int = 0,
        verify: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.source_train: list[ReidRecord] = []
        self.target_train: list[ReidRecord] = []
        self.query: list[ReidRecord] = []
        self.gallery: list[ReidRecord] = []
        self.num_source_classes = 0
        for domain in ("source", "target"):
            name = getattr(self.hparams, domain)
            if name != "synthetic" and name not in READERS:
                raise InputError(f"--data.{domain} {name!r} is not a dataset; choose synthetic or one of {sorted(READERS)}")

    def _settings(self, domain: str) -> dict:
        """The synthetic writer's settings of one domain (they also name its cache folder)."""
        h = self.hparams
        kwargs = (
            dict(num_cams=4, camera_shift=0.0, seed=1)
            if domain == "source"
            else dict(num_cams=h.synthetic_cams, camera_shift=h.synthetic_shift, seed=2)
        )
        return dict(
            layout="market",
            num_train_ids=h.synthetic_ids,
            num_test_ids=h.synthetic_ids,
            images_per_cam=h.synthetic_images_per_cam,
            image_size=list(h.image_size),
            camera_bias=h.synthetic_bias,
            num_distractors=4,
            num_junk=2,
            **kwargs,
        )

    def root(self, domain: str) -> Path:
        """The folder of a domain: the given `<domain>_root`, or the cache folder of the synthetic settings."""
        given = getattr(self.hparams, f"{domain}_root")
        if given:
            return Path(given).expanduser()
        if getattr(self.hparams, domain) != "synthetic":
            raise InputError(f"--data.{domain} {getattr(self.hparams, domain)} needs --data.{domain}_root (its folder)")
        key = hashlib.sha1(json.dumps(self._settings(domain), sort_keys=True).encode()).hexdigest()[:10]
        return cache_dir("synthetic") / f"cacl_{domain}_{key}"

    def check_data(self, stage: str = "fit") -> None:
        """Real datasets: the folders exist and hold the expected layout (read-only; called before any model)."""
        for domain in ("source", "target") if stage == "fit" else ("target",):
            name = getattr(self.hparams, domain)
            if name == "synthetic":
                continue
            split = read_reid_dataset(name, self.root(domain))  # names the folder and the expected layout if wrong
            if self.hparams.verify:
                for record in [*split.train, *split.query, *split.gallery]:
                    open_rgb(record.path)  # a damaged image fails here, named

    def _write_synthetic(self) -> None:
        h = self.hparams
        for domain in ("source", "target"):
            if getattr(h, domain) != "synthetic":
                continue
            settings = self._settings(domain)
            settings["image_size"] = tuple(settings["image_size"])
            root = self.root(domain)
            folder = root / "Market-1501-v15.09.15"
            stamp = folder / "cacl_settings.json"
            wanted = json.dumps(self._settings(domain), sort_keys=True)
            if stamp.is_file() and stamp.read_text() == wanted:
                continue
            if folder.exists():
                shutil.rmtree(folder)
            print(f"writing the synthetic {domain} dataset to {root}", flush=True)
            write_synthetic_reid(root, **settings)
            stamp.write_text(wanted)

    def prepare_data(self) -> None:
        self._write_synthetic()

    def setup(self, stage: str | None = None) -> None:
        if self.source_train:
            return
        h = self.hparams
        read = lambda domain, name: read_reid_dataset("market1501" if name == "synthetic" else name, self.root(domain))
        source, target = read("source", h.source), read("target", h.target)
        self.source_train, mapping = relabel(source.train)
        self.num_source_classes = len(mapping)
        self.target_train, self.query, self.gallery = target.train, target.query, target.gallery

    def synthetic_camera_order(self) -> list[int] | None:
        """The synthetic target's true camera order (least to most shifted), or None for real data."""
        if self.hparams.target != "synthetic":
            return None
        meta = self.root("target") / "Market-1501-v15.09.15" / "synthetic_meta.json"
        if not meta.is_file():
            return None
        return json.loads(meta.read_text())["camera_shift_order"]

    def _train_transform(self):
        return reid_transforms(
            True,
            size=tuple(self.hparams.image_size),
            pad=self.hparams.image_size[1] // 12,
            erasing_p=self.hparams.erasing_p,
        )

    def _pk_loader(self, dataset: Dataset, labels: list[int], p: int, epoch: int) -> DataLoader:
        h = self.hparams
        sampler = RepeatedPKSampler(labels, p, h.batch_k, h.iters, seed=h.seed)
        sampler.set_epoch(epoch)
        return DataLoader(
            dataset,
            batch_size=p * h.batch_k,
            sampler=sampler,
            num_workers=h.num_workers,
            drop_last=True,
            persistent_workers=False,
        )

    def train_dataloader(self) -> CombinedLoader:
        """Source P x K batches; in adaptation epochs also target P x K batches over the pseudo labels the module's
        `on_train_epoch_start` sets (read when the epoch's first batch is drawn)."""
        module = self.trainer.lightning_module
        epoch = self.trainer.current_epoch
        h = self.hparams
        source = ImageDataset(self.source_train, self._train_transform())
        loaders = {"source": self._pk_loader(source, [r.pid for r in self.source_train], h.batch_p, epoch)}
        if epoch >= module.hparams.source_epochs:
            target = PseudoLabelled(self.target_train, self._train_transform())
            batches = PlanBatchSampler(module, target, h.batch_p, h.batch_k, h.iters, h.seed)
            batches.set_epoch(epoch)
            loaders["target"] = DataLoader(target, batch_sampler=batches, num_workers=h.num_workers)
        return CombinedLoader(loaders, mode="min_size")

    def feature_loader(self, records: list[ReidRecord]) -> DataLoader:
        """This process's shard (every world-th image) of `records`, test transform; batches carry the index."""
        rank, world = rank_and_world()
        dataset = ImageDataset(records, reid_transforms(False, size=tuple(self.hparams.image_size)))
        # a private generator: extracting features (clustering, evaluation) draws nothing from the global RNG
        return DataLoader(
            Subset(dataset, range(rank, len(records), world)),
            batch_size=self.hparams.test_batch_size,
            num_workers=self.hparams.num_workers,
            generator=torch.Generator().manual_seed(0),
        )

    def val_dataloader(self) -> DataLoader:
        return self.feature_loader(self.query + self.gallery)

    def test_dataloader(self) -> DataLoader:
        return self.feature_loader(self.query + self.gallery)
