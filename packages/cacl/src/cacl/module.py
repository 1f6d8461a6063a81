"""CaCL as one Lightning fit: source pre-training, then camera-curriculum stages of pseudo-label training.

Epochs [0, source_epochs) train the source classifier (cross-entropy). At the first adaptation epoch (in the
`on_train_epoch_start` hook, like every clustering pass) the scheduler
ranks the target cameras by MMD to the source (`camera_curriculum`) and the target test split is evaluated once
(the source-only model). Of the remaining `max_epochs - source_epochs` epochs, every stage but the last gets
`stage_epochs` (default 1) and the last stage, on every camera, the rest (`stage_epochs=None` splits them evenly); each
epoch (every `recluster_every`) the current camera subset is re-clustered (k-reciprocal Jaccard + DBSCAN), the target
part of the memory is reset to the cluster centroids and the CD weights are recomputed. The loss is
L = source_weight * L_CE^S + target_weight * L_CD^T, both over the shared memory classifier (source identity
prototypes followed by target cluster prototypes), as in the paper's overview figure.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from cacl.clustering import cluster_statistics, pseudo_labels
from cacl.curriculum import CameraCurriculum, camera_curriculum, cumulative_stages, stage_of_epoch
from cacl.losses import CameraDiversityLoss
from cacl.memory import ClusterMemory, class_centroids
from cvlab_shared.distributed import all_gather_rows, distributed
from cvlab_shared.metrics.retrieval import evaluate_retrieval
from cvlab_shared.models.reid import build_model
from cvlab_shared.models.weights import load_pretrained


# cluster statistics on the per-epoch console line (all of them are logged to metrics.csv as cluster/*)
ON_SCREEN = ("clusters", "outliers", "cams_per_cluster", "ari")


class CaclModule(pl.LightningModule):
    """CaCL (Lee et al., ICCV'23) on a Cluster-Contrast / SpCL base; every reconstructed choice is an argument.

    Args:
        backbone: "resnet50" (paper), "resnet18" or "tiny" (CPU runs).
        pretrained: optional ImageNet state-dict file for the ResNet trunk.
        pooling: "gem" (Cluster-Contrast default) or "avg".
        last_stride: stride of the last stage (1 as in BoT / Cluster-Contrast).
        width: base width of the tiny backbone.
        lr: Adam learning rate (3.5e-4 in Cluster-Contrast / SpCL).
        weight_decay: Adam weight decay (5e-4).
        lr_step: epochs between x0.1 learning-rate steps, counted from the start of adaptation (0 = constant).
        source_epochs: supervised source epochs before adaptation (the source-only model).
        source_checkpoint: a checkpoint of a source-only run whose network weights to start from (with
            source_epochs=0): the adaptation variants of an ablation then share one source model.
        curriculum: camera curriculum on (paper) or one stage with every camera (ablation).
        cameras_per_stage: cameras added per stage (1 in the paper's figure).
        stage_epochs: epochs of each stage before the last, the last stage (every camera) taking the remaining
            adaptation epochs; None splits the adaptation epochs evenly over the stages (the paper's split is unknown).
        mmd_max_samples: at most this many features per set enter the MMD (seeded subsample).
        recluster_every: re-cluster every this many epochs inside a stage (Cluster-Contrast / SpCL: 1).
        cd_loss: camera-diversity weighting on (paper) or uniform weights, i.e. plain cluster cross-entropy (ablation).
        cd_normalize: "mean" (mean weight 1), "total" (divide by the camera count) or "none".
        cd_power: w_k = |cams(k)|^cd_power.
        shared_classifier: one softmax over source prototypes + target clusters (paper figure, SpCL-like) or two.
        source_weight: weight of the source cross-entropy during adaptation.
        target_weight: weight of the target CD loss.
        temperature: memory temperature tau (0.05).
        momentum: memory momentum (0.1 in the Cluster-Contrast README).
        k1: k-reciprocal neighbours of the Jaccard distance (30 for full datasets).
        k2: query-expansion neighbours of the Jaccard distance (6).
        eps: DBSCAN radius on the Jaccard distance (0.6).
        min_samples: DBSCAN core-point size (4).
    """

    hidden_on_console = ("cluster/",)  # the per-epoch line of the core's EpochPrinter leaves these to metrics.csv

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: str | None = None,
        pooling: str = "gem",
        last_stride: int = 1,
        width: int = 16,
        lr: float = 3.5e-4,
        weight_decay: float = 5e-4,
        lr_step: int = 0,
        source_epochs: int = 10,
        source_checkpoint: str | None = None,
        curriculum: bool = True,
        cameras_per_stage: int = 1,
        stage_epochs: int | None = None,
        mmd_max_samples: int = 1000,
        recluster_every: int = 1,
        cd_loss: bool = True,
        cd_normalize: str = "mean",
        cd_power: float = 1.0,
        shared_classifier: bool = True,
        source_weight: float = 1.0,
        target_weight: float = 1.0,
        temperature: float = 0.05,
        momentum: float = 0.1,
        k1: int = 30,
        k2: int = 6,
        eps: float = 0.6,
        min_samples: int = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(backbone, 0, last_stride, pooling, width, pretrained)
        if source_checkpoint:
            load_pretrained(self.model, source_checkpoint, prefix="model.")
        self.source_classifier: nn.Linear | None = None
        self.memory = ClusterMemory(self.model.feature_dim, temperature, momentum)
        self.cd = CameraDiversityLoss(cd_normalize, cd_power, enabled=cd_loss)
        self.schedule: CameraCurriculum | None = None
        self.num_source_classes = 0
        self.num_clusters = 0
        self.source_only: dict[str, float] = {}
        self._val_batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.plan: tuple[list[int], list[int]] | None = None  # (target indices, pseudo labels) of this epoch
        self.test_results: dict[str, float] = {}  # the last test's mAP / rank-1 / rank-5 (printed by _finish_eval)

    # ---- set-up -------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        dm.setup(stage)
        if self.source_classifier is None:
            self.num_source_classes = dm.num_source_classes
            self.source_classifier = nn.Linear(self.model.feature_dim, self.num_source_classes, bias=False)
            nn.init.normal_(self.source_classifier.weight, std=0.001)

    def on_fit_start(self) -> None:
        if self.trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "CaCL rebuilds its training loaders each epoch: set trainer.reload_dataloaders_every_n_epochs=1"
            )
        if self.trainer.max_epochs is None or self.trainer.max_epochs < self.hparams.source_epochs:
            raise ValueError(
                f"trainer.max_epochs must be at least source_epochs={self.hparams.source_epochs} "
                "(equal: source-only training)"
            )
        adaptation = self.trainer.max_epochs - self.hparams.source_epochs
        if self.hparams.curriculum and adaptation > 0:  # a stage_epochs that starves the last stage fails now
            cameras = sorted({r.camid for r in self.trainer.datamodule.target_train})
            stages = len(cumulative_stages(cameras, self.hparams.cameras_per_stage))
            stage_of_epoch(0, stages, adaptation, self.hparams.stage_epochs)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.lr_step <= 0:
            return opt
        start, step = self.hparams.source_epochs, self.hparams.lr_step
        decay = lambda e: 0.1 ** (max(e - start, 0) // step) if e >= start else 1.0
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, decay)}

    # ---- the curriculum -----------------------------------------------------------------------------------------
    def stage_of(self, epoch: int) -> int:
        """0-based curriculum stage of a (global) adaptation epoch, following `stage_epochs`."""
        stages = len(self.schedule.stages) if self.schedule else 1
        total = self.trainer.max_epochs - self.hparams.source_epochs
        return stage_of_epoch(epoch - self.hparams.source_epochs, stages, total, self.hparams.stage_epochs)

    @torch.no_grad()
    def extract(self, records) -> torch.Tensor:
        """BNNeck features of `records` in order; each process extracts its shard, then all shards are gathered."""
        was_training = self.model.training
        self.model.eval()
        feats, index = [], []
        for images, _, _, idx in self.trainer.datamodule.feature_loader(records):
            feats.append(self.model(images.to(self.device)).bn_features.float())
            index.append(idx.to(self.device))
        self.model.train(was_training)
        dim = self.model.feature_dim
        local_f = torch.cat(feats) if feats else torch.zeros(0, dim, device=self.device)
        local_i = torch.cat(index) if index else torch.zeros(0, dtype=torch.long, device=self.device)
        all_f, all_i = all_gather_rows(local_f), all_gather_rows(local_i)
        out = torch.zeros(len(records), dim, device=self.device)
        out[all_i] = all_f
        return out

    def _print(self, text: str) -> None:
        if self.trainer.is_global_zero:
            print(text, flush=True)

    def _start_adaptation(self) -> None:
        dm = self.trainer.datamodule
        self.source_only = self.evaluate_target()
        self._print(
            f"target before adaptation (source-only): mAP={self.source_only['mAP']:.4f} "
            f"rank-1={self.source_only['rank1']:.4f}"
        )
        source = self.extract(dm.source_train)
        target = self.extract(dm.target_train)
        cams = torch.tensor([r.camid for r in dm.target_train], device=self.device)
        self.schedule = camera_curriculum(
            source,
            target,
            cams,
            self.hparams.cameras_per_stage,
            self.hparams.curriculum,
            max_samples=self.hparams.mmd_max_samples,
        )
        self._print(self.schedule.describe())
        truth = dm.synthetic_camera_order()
        if truth is not None:
            self._print(f"  true camera order of the synthetic target (least shifted first): {truth}")
        labels = torch.tensor([r.pid for r in dm.source_train], device=self.device)
        self.memory.reset(class_centroids(F.normalize(source, dim=1), labels, self.num_source_classes))

    def prepare_epoch(self, epoch: int) -> tuple[list[int], list[int]] | None:
        """Cluster for `epoch` (from `on_train_epoch_start`): None in source epochs, else (target indices, labels)."""
        if epoch < self.hparams.source_epochs:
            return None
        if self.schedule is None:
            self._start_adaptation()
        stage = self.stage_of(epoch)
        cams = set(self.schedule.stages[stage])
        dm = self.trainer.datamodule
        indices = [i for i, r in enumerate(dm.target_train) if r.camid in cams]
        records = [dm.target_train[i] for i in indices]
        features = F.normalize(self.extract(records), dim=1)
        h = self.hparams
        labels = pseudo_labels(features, h.k1, h.k2, h.eps, h.min_samples)
        if distributed():
            dist.broadcast(labels, 0)
        self.num_clusters = int(labels.max()) + 1 if len(labels) else 0
        camids = torch.tensor([r.camid for r in records], device=labels.device)
        weights = self.cd.set_clusters(labels.cpu(), camids.cpu(), self.num_clusters).to(self.device)
        self.cd.weights = weights
        stats = cluster_statistics(labels.cpu(), camids.cpu(), torch.tensor([r.pid for r in records]), weights.cpu())
        shown = [f"{k}={stats[k]:.3g}" if isinstance(stats[k], float) else f"{k}={stats[k]}" for k in ON_SCREEN if k in stats]
        self._print(
            f"epoch {epoch + 1} stage {stage + 1}/{len(self.schedule.stages)} cameras {sorted(cams)}: " + " ".join(shown)
        )
        # every statistic goes to metrics.csv; the console line keeps the few above
        self.log_dict({f"cluster/{k}": float(v) for k, v in stats.items()} | {"curriculum/stage": float(stage + 1)})
        source_rows = self.memory.features[: self.num_source_classes]
        if self.num_clusters < 2:
            self._print("  fewer than two clusters: this epoch trains on the source only")
            self.memory.reset(source_rows)
            self.num_clusters = 0
            return None
        centroids = class_centroids(features, labels.to(self.device), self.num_clusters)
        self.memory.reset(torch.cat([source_rows, F.normalize(centroids, dim=1)]))
        keep = labels >= 0
        return [indices[i] for i in torch.nonzero(keep).flatten().tolist()], labels[keep].tolist()

    # ---- training -----------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        """The clustering pass of this epoch (pseudo labels, memory, CD weights); the target loader reads `plan`."""
        self.plan = self.prepare_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        xs, ys, _, _ = batch["source"]
        if "target" not in batch or self.num_clusters == 0 or self.plan is None:
            if self.current_epoch < self.hparams.source_epochs:
                logits = self.source_classifier(self.model(xs).bn_features)
                loss = F.cross_entropy(logits, ys)
                self.log("train/source_ce", loss, prog_bar=True)
                self.log("train/source_acc", (logits.argmax(1) == ys).float().mean())
                return loss
            return self._adaptation_step(xs, ys, None, None)
        xt, yt, _, _ = batch["target"]
        return self._adaptation_step(xs, ys, xt, yt)

    def _adaptation_step(self, xs, ys, xt, yt) -> torch.Tensor:
        ns, h = self.num_source_classes, self.hparams
        x = xs if xt is None else torch.cat([xs, xt])
        feats = self.model(x).bn_features
        fs, ft = feats[: len(xs)], feats[len(xs) :]
        logits_s = self.memory.logits(fs)
        loss_s = F.cross_entropy(logits_s if h.shared_classifier else logits_s[:, :ns], ys)
        loss = h.source_weight * loss_s
        self.log("train/source_ce", loss_s, prog_bar=True)
        if xt is not None:
            logits_t = self.memory.logits(ft)
            if h.shared_classifier:
                loss_t = self.cd(logits_t, yt, offset=ns)
            else:
                loss_t = self.cd(logits_t[:, ns:], yt)
            loss = loss + h.target_weight * loss_t
            self.log("train/target_cd", loss_t, prog_bar=True)
            self.memory.update(feats, torch.cat([ys, yt + ns]))
        else:
            self.memory.update(fs, ys)
        return loss

    # ---- evaluation on the target test split --------------------------------------------------------------------
    def evaluate_target(self) -> dict[str, float]:
        """mAP / CMC of the current model on the target query/gallery (outside the Lightning loops)."""
        dm = self.trainer.datamodule
        return self._metrics(F.normalize(self.extract(dm.query + dm.gallery), dim=1))

    def _metrics(self, feats: torch.Tensor) -> dict[str, float]:
        """Market protocol on target query/gallery features (same id + camera removed, non-interpolated mAP)."""
        q, g = self.trainer.datamodule.query, self.trainer.datamodule.gallery
        out = evaluate_retrieval(
            feats[: len(q)],
            feats[len(q) :],
            [r.pid for r in q],
            [r.pid for r in g],
            [r.camid for r in q],
            [r.camid for r in g],
        )
        return {name: float(out[name]) for name in ("mAP", "rank1", "rank5")}

    def validation_step(self, batch, batch_idx: int) -> None:
        images, _, _, index = batch
        self._val_batches.append((F.normalize(self.model(images).bn_features.float(), dim=1), index))

    def on_validation_epoch_start(self) -> None:
        self._val_batches = []

    def _finish_eval(self, stage: str) -> None:
        dm = self.trainer.datamodule
        dim = self.model.feature_dim
        feats = (
            torch.cat([f for f, _ in self._val_batches])
            if self._val_batches
            else torch.zeros(0, dim, device=self.device)
        )
        index = (
            torch.cat([i for _, i in self._val_batches])
            if self._val_batches
            else torch.zeros(0, dtype=torch.long, device=self.device)
        )
        feats, index = all_gather_rows(feats), all_gather_rows(index)
        full = torch.zeros(len(dm.query) + len(dm.gallery), dim, device=self.device)
        full[index] = feats
        metrics = self._metrics(full)
        self._val_batches = []
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, rank_zero_only=False, sync_dist=False)
        if stage == "test":
            self.test_results = metrics
        if stage == "test" and not self.source_only:
            self._print(f"target mAP / rank-1: {metrics['mAP']:.4f} / {metrics['rank1']:.4f}")
        if stage == "test" and self.source_only:
            self._print(
                f"target mAP / rank-1: before adaptation {self.source_only['mAP']:.4f} / "
                f"{self.source_only['rank1']:.4f}, after CaCL {metrics['mAP']:.4f} / {metrics['rank1']:.4f}"
            )
            self.log("test/source_only_mAP", self.source_only["mAP"])
            self.log("test/source_only_rank1", self.source_only["rank1"])

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_start(self) -> None:
        self._val_batches = []

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    # ---- checkpoint state outside the parameters ----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        schedule = None
        if self.schedule is not None:
            schedule = {"mmd": self.schedule.mmd, "order": self.schedule.order, "stages": self.schedule.stages}
        checkpoint["cacl"] = {
            "schedule": schedule,
            "source_only": self.source_only,
            "num_source_classes": self.num_source_classes,
            "plan": self.plan,
            "num_clusters": self.num_clusters,
            "cd_weights": self.cd.weights.detach().cpu(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("cacl", {})
        if state.get("schedule"):
            self.schedule = CameraCurriculum(**state["schedule"])
        self.source_only = state.get("source_only") or self.source_only
        self.num_source_classes = state.get("num_source_classes", self.num_source_classes)
        self.plan = state.get("plan")
        self.num_clusters = state.get("num_clusters", self.num_clusters)
        if state.get("cd_weights") is not None:
            self.cd.weights = state["cd_weights"].to(self.cd.weights.device)
        weight = checkpoint["state_dict"].get("source_classifier.weight")
        if weight is not None:
            self.source_classifier = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
