"""STMN as a LightningModule: the official loss sum, Adam + StepLR, and MARS-protocol evaluation under the RRS and
all-frames test protocols (features of every test tracklet gathered across processes, each tracklet once)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from cvlab_shared.distributed import all_gather_rows
from cvlab_shared.metrics.video_retrieval import evaluate_video
from stmn.losses import stmn_loss
from stmn.models import STMN

PROTOCOL_NAMES = {"rrs": "RRS", "all": "all frames"}
COUNTS = ("tracklets", "queries")  # logged by the test only (metrics.csv), beside the metrics


class StmnModule(pl.LightningModule):
    """Spatial and Temporal Memory Networks (Eom et al., ICCV'21).

    Args:
        backbone: "resnet50" (paper), "resnet18" or "tiny" (CPU runs).
        pretrained: optional ImageNet state-dict file for the ResNet trunk (nothing is downloaded).
        last_stride: stride of the last stage (1).
        width: base width of the tiny CNN.
        smem_size, tmem_size: memory slots (10 and 5 in the official train.sh).
        smem_margin, tmem_margin: spread-loss margins (0.3).
        spatial_memory, temporal_memory: switch each memory off (ablations).
        spatial_layout: "position" (paper: one query per location) or "official" (reshape without permute).
        key_norm: "key" (paper: per key vector) or "slot" (official: along the slot axis).
        lr: Adam learning rate (1e-4).
        weight_decay: Adam weight decay (1e-5).
        lr_step: epochs between learning-rate decays (50); 0 keeps it constant.
        lr_gamma: decay factor (0.1).
        eval_ap: "standard" (STMN / torchreid AP) or "trapezoid" (official MARS MATLAB AP).
        eval_chunk: clips per forward pass in the all-frames protocol (bounds memory on long tracklets).
    """

    # the per-epoch line shows loss, accuracy, mAP, rank-1/5; the loss parts and the other ranks stay in metrics.csv
    hidden_on_console = ("train/ce_", "train/spread_", "train/trip_", "val/rank10", "val/rank20", "val/mINP")

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: str | None = None,
        last_stride: int = 1,
        width: int = 16,
        smem_size: int = 10,
        tmem_size: int = 5,
        smem_margin: float = 0.3,
        tmem_margin: float = 0.3,
        spatial_memory: bool = True,
        temporal_memory: bool = True,
        spatial_layout: str = "position",
        key_norm: str = "key",
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        lr_step: int = 50,
        lr_gamma: float = 0.1,
        eval_ap: str = "standard",
        eval_chunk: int = 64,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net: STMN | None = None
        self._feats: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.results: dict[str, dict[str, float]] = {}
        self.test_results: dict[str, float] = {}

    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        dm = self.trainer.datamodule
        dm.setup(stage)
        h = self.hparams
        self.net = STMN(
            dm.num_classes,
            backbone=h.backbone,
            last_stride=h.last_stride,
            width=h.width,
            pretrained=h.pretrained,
            seq_len=dm.hparams.seq_len,
            smem_size=h.smem_size,
            tmem_size=h.tmem_size,
            smem_margin=h.smem_margin,
            tmem_margin=h.tmem_margin,
            spatial_memory=h.spatial_memory,
            temporal_memory=h.temporal_memory,
            spatial_layout=h.spatial_layout,
            key_norm=h.key_norm,
        )

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.lr_step <= 0:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(opt, self.hparams.lr_step, self.hparams.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": sched}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, pids, _, _ = batch
        out = self.net(x)
        parts = stmn_loss(
            out.logits_s,
            out.logits_t,
            out.frame_features.mean(1),
            out.sequence_features,
            out.spread_s,
            out.spread_t,
            pids,
        )
        self.log("train/loss", parts["loss"], prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in parts.items() if k != "loss"})
        self.log("train/acc", (out.logits_t.argmax(1) == pids).float().mean())
        return parts["loss"]

    # ---- evaluation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def tracklet_features(self, batch, protocol: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, test indices) of an evaluation batch; all-frames: the mean over each tracklet's clips+flips."""
        if protocol == "rrs":
            x, _, _, index = batch
            return self.net.embed(x).float(), index
        clips, _, _, index, counts = batch
        chunk = self.hparams.eval_chunk
        feats = torch.cat([self.net.embed(clips[i : i + chunk]).float() for i in range(0, len(clips), chunk)])
        owner = torch.repeat_interleave(torch.arange(len(counts), device=feats.device), counts.to(feats.device))
        summed = torch.zeros(len(counts), feats.shape[1], device=feats.device).index_add_(0, owner, feats)
        return summed / counts.to(feats.device)[:, None], index

    def _store(self, batch, protocol: str) -> None:
        self._feats.setdefault(protocol, []).append(self.tracklet_features(batch, protocol))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._store(batch, "rrs")

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._store(batch, ("rrs", "all")[dataloader_idx])

    def on_validation_epoch_start(self) -> None:
        self._feats = {}

    def on_test_epoch_start(self) -> None:
        self._feats = {}

    def evaluate_features(self, protocol: str) -> dict[str, float]:
        """Gather every process's tracklet features (each test tracklet once) and evaluate the MARS protocol; the
        metrics plus `tracklets` (features gathered) and `queries` (queries ranked)."""
        split = self.trainer.datamodule.split
        parts = self._feats.get(protocol, [])
        dim = self.net.feature_dim
        feats = torch.cat([f for f, _ in parts]) if parts else torch.zeros(0, dim, device=self.device)
        index = torch.cat([i for _, i in parts]).to(feats.device) if parts else torch.zeros(0, dtype=torch.long)
        feats, index = all_gather_rows(feats), all_gather_rows(index.to(feats.device))
        if len(index) != len(split.test) or len(torch.unique(index)) != len(split.test):
            raise RuntimeError(f"gathered {len(index)} tracklet features for {len(split.test)} test tracklets")
        full = torch.zeros(len(split.test), dim, device=feats.device)
        full[index] = feats
        out = evaluate_video(
            full,
            [t.pid for t in split.test],
            [t.camid for t in split.test],
            split.query_idx,
            split.gallery_idx,
            ap=self.hparams.eval_ap,
        )
        metrics = {k: float(out[k]) for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP") if k in out}
        # what was ranked: every test tracklet's feature once (checked above), and the queries
        return {**metrics, "tracklets": float(len(index)), "queries": float(out["num_queries"])}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # a few batches only: no full test set to rank
            self._feats = {}
            return
        metrics = self.evaluate_features("rrs")
        # the same values on every rank (all features gathered): syncing averages equal numbers, and under DDP
        # Lightning warns for every epoch-level value logged without it
        self.log_dict({f"val/{k}": v for k, v in metrics.items() if k not in COUNTS}, sync_dist=True)
        self._feats = {}

    def on_test_epoch_end(self) -> None:
        for protocol in ("rrs", "all"):
            if protocol in self._feats:
                self.results[protocol] = metrics = self.evaluate_features(protocol)
                self.log_dict({f"test/{protocol}_{k}": v for k, v in metrics.items()}, sync_dist=True)
        self._feats = {}
        # kept flat for callers; its presence tells the core's Trainer.test that this module prints its own table
        self.test_results = {f"{p}_{k}": v for p, m in self.results.items() for k, v in m.items()}
        if self.trainer.is_global_zero and self.results:
            print(self.results_table(), flush=True)

    def results_table(self) -> str:
        """The test results as a small table (percentages)."""
        lines = ["protocol     rank-1  rank-5  rank-10  mAP    mINP"]
        for protocol, m in self.results.items():
            pct = {k: 100 * m.get(k, float("nan")) for k in ("rank1", "rank5", "rank10", "mAP", "mINP")}
            lines.append(
                f"{PROTOCOL_NAMES[protocol]:<11s} {pct['rank1']:6.1f}  {pct['rank5']:6.1f}  "
                f"{pct['rank10']:6.1f}  {pct['mAP']:5.1f}  {pct['mINP']:5.1f}"
            )
        return "\n".join(lines)
