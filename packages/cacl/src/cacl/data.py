"""Source (labelled) + target (unlabelled, with camera labels) datamodule over the core's re-ID readers.

`dataset="synthetic"` writes (once, in `prepare_data`) a deterministic source/target pair with the core's synthetic
writer: the source is rendered without camera shift, the target's cameras are shifted by graded amounts in a known
order (the scheduler test's ground truth). The training loaders are rebuilt every epoch
(`reload_dataloaders_every_n_epochs=1`) from the module's plan: source batches always, target batches over the
pseudo-labelled images of the current camera stage. All samplers are rank-aware, so the trainer runs with
`use_distributed_sampler=False`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Subset

from cvlab_shared.data.reid import ImageDataset, PKSampler, ReidRecord, read_reid_dataset, reid_transforms, relabel
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


def relabelled(records: list[ReidRecord], labels: list[int]) -> list[ReidRecord]:
    """The records with their pid replaced by `labels` (source identities or target pseudo labels)."""
    return [ReidRecord(r.path, int(y), r.camid) for r, y in zip(records, labels)]


class CaclDataModule(pl.LightningDataModule):
    """Source and target re-ID data for CaCL.

    Args:
        source: "synthetic" or a reader name (market1501, dukemtmc, msmt17, personx).
        target: same choices as `source`.
        source_root: folder holding the source dataset (or where the synthetic source is written).
        target_root: folder holding the target dataset (or where the synthetic target is written).
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
    """

    def __init__(
        self,
        source: str = "synthetic",
        target: str = "synthetic",
        source_root: str = "data/cacl_synthetic/source",
        target_root: str = "data/cacl_synthetic/target",
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.source_train: list[ReidRecord] = []
        self.target_train: list[ReidRecord] = []
        self.query: list[ReidRecord] = []
        self.gallery: list[ReidRecord] = []
        self.num_source_classes = 0

    def _write_synthetic(self) -> None:
        h = self.hparams
        specs = (
            (h.source, h.source_root, dict(num_cams=4, camera_shift=0.0, seed=1)),
            (h.target, h.target_root, dict(num_cams=h.synthetic_cams, camera_shift=h.synthetic_shift, seed=2)),
        )
        for name, root, kwargs in specs:
            if name != "synthetic":
                continue
            settings = dict(
                layout="market",
                num_train_ids=h.synthetic_ids,
                num_test_ids=h.synthetic_ids,
                images_per_cam=h.synthetic_images_per_cam,
                image_size=tuple(h.image_size),
                camera_bias=h.synthetic_bias,
                num_distractors=4,
                num_junk=2,
                **kwargs,
            )
            folder = Path(root) / "Market-1501-v15.09.15"
            stamp = folder / "cacl_settings.json"
            wanted = json.dumps(settings, sort_keys=True)
            if stamp.is_file() and stamp.read_text() == wanted:
                continue
            if folder.exists():
                shutil.rmtree(folder)
            print(
                f"writing the synthetic {'source' if root == h.source_root else 'target'} dataset to {root}", flush=True
            )
            write_synthetic_reid(root, **settings)
            stamp.write_text(wanted)

    def prepare_data(self) -> None:
        self._write_synthetic()

    def setup(self, stage: str | None = None) -> None:
        if self.source_train:
            return
        h = self.hparams
        read = lambda name, root: read_reid_dataset("market1501" if name == "synthetic" else name, root)
        source, target = read(h.source, h.source_root), read(h.target, h.target_root)
        self.source_train, mapping = relabel(source.train)
        self.num_source_classes = len(mapping)
        self.target_train, self.query, self.gallery = target.train, target.query, target.gallery

    def synthetic_camera_order(self) -> list[int] | None:
        """The synthetic target's true camera order (least to most shifted), or None for real data."""
        meta = Path(self.hparams.target_root) / "Market-1501-v15.09.15" / "synthetic_meta.json"
        if self.hparams.target != "synthetic" or not meta.is_file():
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
        """Source P x K batches, plus target P x K batches over pseudo labels when the module's plan has any."""
        module = self.trainer.lightning_module
        epoch = self.trainer.current_epoch
        plan = module.prepare_epoch(epoch)
        source = ImageDataset(self.source_train, self._train_transform())
        loaders = {"source": self._pk_loader(source, [r.pid for r in self.source_train], self.hparams.batch_p, epoch)}
        if plan is not None:
            indices, labels = plan
            records = [self.target_train[i] for i in indices]
            target = ImageDataset(relabelled(records, labels), self._train_transform())
            p = min(self.hparams.batch_p, len({y for y in labels if y >= 0}))
            loaders["target"] = self._pk_loader(target, labels, p, epoch)
        return CombinedLoader(loaders, mode="min_size")

    def feature_loader(self, records: list[ReidRecord]) -> DataLoader:
        """This process's shard (every world-th image) of `records`, test transform; batches carry the index."""
        rank, world = rank_and_world()
        dataset = ImageDataset(records, reid_transforms(False, size=tuple(self.hparams.image_size)))
        return DataLoader(
            Subset(dataset, range(rank, len(records), world)),
            batch_size=self.hparams.test_batch_size,
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.feature_loader(self.query + self.gallery)

    def test_dataloader(self) -> DataLoader:
        return self.feature_loader(self.query + self.gallery)
