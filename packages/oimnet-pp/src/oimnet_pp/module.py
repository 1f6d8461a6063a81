"""OIMNet++ as a LightningModule: joint detection + re-ID training, and the person-search evaluation of the papers.

Training follows the official schedule: SGD (momentum 0.9, weight decay 5e-4) at lr 0.003 for batch 5, a linear
warm-up over the whole first epoch from a factor 1e-3, x0.1 at the milestone epochs (16 of 20), gradient-norm clip
10 (`trainer.gradient_clip_val`) and AMP on GPU (`trainer.precision=16-mixed`). The OIM lookup table, circular
queue and its header are buffers of the loss module: checkpoints carry them and a resumed run continues with them.

Evaluation (validation and test): every gallery image goes through the detector (boxes, scores, embeddings of the
proposals), every query box through RoIAlign + the head (no detection); then the core's person-search protocol:
detection AP / recall (IoU 0.5, det_thresh 0.01 as the official engine), search mAP and top-1/5/10 with
detection recall folded in (CUHK-SYSU: the TestG{gallery_size} protocol, PRW: all other frames or cross-camera).
Under DDP each rank runs its shard of the gallery and queries; the results are gathered before the metrics.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist

from cvlab_shared.distributed import distributed
from cvlab_shared.metrics.person_search import evaluate_detection, evaluate_search
from cvlab_shared.models.weights import load_pretrained
from oimnet_pp.models import OIMNet


def _gather(items: list) -> list:
    """Python objects of every rank, concatenated (identity outside DDP)."""
    if not distributed():
        return items
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


class OIMNetModule(pl.LightningModule):
    """OIMNet / OIMNet++ / OIMNet+++ training and person-search evaluation.

    Args:
        backbone, width, embedding_dim, norm_type, loss_type, augment, cq_size, oim_momentum, oim_scalar, oim_eps,
        table_dtype, min_size, max_size, anchor_sizes, aspect_ratios, rpn_*, roi_*, score_thresh, nms_thresh,
        detections_per_img, proposal_reg_weight, roi_output_size: the network (see `oimnet_pp.models.OIMNet`).
        num_pids: lookup-table rows; None takes the datamodule's number of labelled training identities.
        pretrained: a local state-dict file for the ResNet trunk and head (torchvision ImageNet weights); none is
            downloaded.
        optimizer: "sgd" (official) or "adam" (the CPU default: learns the tiny detector in far fewer steps).
        lr, momentum, weight_decay: SGD (0.003, 0.9, 5e-4); Adam uses lr and weight_decay.
        warmup_factor: start factor of the linear warm-up over `warmup_epochs` (1e-3 over 1 epoch).
        milestones, gamma: x gamma at these epochs (16 of 20; 0.1).
        gallery_size: CUHK-SYSU protocol TestG{gallery_size} (100 is the headline setting).
        gallery_curve: also evaluate every available CUHK-SYSU gallery size (test only).
        ignore_cam_id: PRW gallery keeps same-camera frames (official default True; False = cross-camera).
        cbgm: context bipartite graph matching at test time (k1/k2 10/3 for CUHK-SYSU, 30/4 for PRW).
        use_gt_boxes: evaluate search with ground-truth gallery boxes (upper bound of the re-ID part).
        det_thresh: gallery detection score threshold of the search (0.5).
        plot: after testing, save each of the first `plot_queries` queries with its top-5 gallery hits.
        plot_queries: how many queries to plot.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        width: int = 32,
        embedding_dim: int = 256,
        norm_type: str = "protonorm",
        loss_type: str = "LOIM",
        augment: bool = False,
        num_pids: int | None = None,
        cq_size: int = 5000,
        oim_momentum: float = 0.5,
        oim_scalar: float = 30.0,
        oim_eps: float = 0.1,
        table_dtype: str = "float32",
        min_size: int = 900,
        max_size: int = 1500,
        anchor_sizes: list[list[int]] = [[8, 16, 32]],
        aspect_ratios: list[list[float]] = [[0.5, 1.0, 2.0]],
        rpn_pre_nms_top_n_train: int = 12000,
        rpn_pre_nms_top_n_test: int = 6000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 300,
        rpn_batch_size: int = 256,
        roi_batch_size: int = 128,
        score_thresh: float = 0.5,
        nms_thresh: float = 0.4,
        detections_per_img: int = 300,
        proposal_reg_weight: float = 10.0,
        roi_output_size: int = 14,
        pretrained: str | None = None,
        optimizer: str = "sgd",
        lr: float = 0.003,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        warmup_factor: float = 1e-3,
        warmup_epochs: int = 1,
        milestones: list[int] = [16],
        gamma: float = 0.1,
        gallery_size: int = 100,
        gallery_curve: bool = False,
        ignore_cam_id: bool = True,
        cbgm: bool = False,
        use_gt_boxes: bool = False,
        det_thresh: float = 0.5,
        plot: bool = False,
        plot_queries: int = 3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net: OIMNet | None = None
        self._gallery_out: list = []
        self._query_out: list = []
        self.results: dict[str, float] = {}

    # ---- set-up ---------------------------------------------------------------------------------------------
    def _build(self, num_pids: int) -> None:
        h = self.hparams
        self.net = OIMNet(
            num_pids=num_pids,
            cq_size=h.cq_size,
            backbone=h.backbone,
            width=h.width,
            embedding_dim=h.embedding_dim,
            norm_type=h.norm_type,
            loss_type=h.loss_type,
            augment=h.augment,
            oim_momentum=h.oim_momentum,
            oim_scalar=h.oim_scalar,
            oim_eps=h.oim_eps,
            table_dtype=h.table_dtype,
            min_size=h.min_size,
            max_size=h.max_size,
            anchor_sizes=tuple(tuple(s) for s in h.anchor_sizes),
            aspect_ratios=tuple(tuple(r) for r in h.aspect_ratios),
            rpn_pre_nms_top_n_train=h.rpn_pre_nms_top_n_train,
            rpn_pre_nms_top_n_test=h.rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_train=h.rpn_post_nms_top_n_train,
            rpn_post_nms_top_n_test=h.rpn_post_nms_top_n_test,
            rpn_batch_size=h.rpn_batch_size,
            roi_batch_size=h.roi_batch_size,
            score_thresh=h.score_thresh,
            nms_thresh=h.nms_thresh,
            detections_per_img=h.detections_per_img,
            proposal_reg_weight=h.proposal_reg_weight,
            roi_output_size=h.roi_output_size,
        )
        if h.backbone != "tiny":
            if h.pretrained:
                load_pretrained(self.net.trunk.body, h.pretrained, prefix="")
            else:
                print(
                    "no pretrained weights given (--model.pretrained FILE): the ResNet trains from scratch", flush=True
                )

    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        dm = self.trainer.datamodule
        dm.setup(stage)
        num_pids = self.hparams.num_pids or dm.num_train_pids
        if num_pids < 1:
            raise ValueError("the training split has no labelled identity (pids 1..N): the lookup table would be empty")
        size = self.hparams.gallery_size
        if dm.data.layout == "cuhk_sysu" and size not in dm.data.protocols:  # before training, not after it
            raise ValueError(f"model.gallery_size={size}: the dataset has TestG{sorted(dm.data.protocols)} only")
        self._build(num_pids)

    def configure_optimizers(self):
        h = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if h.optimizer not in ("sgd", "adam"):
            raise ValueError(f"model.optimizer must be 'sgd' or 'adam', got {h.optimizer!r}")
        if h.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=h.lr, weight_decay=h.weight_decay)
        per_epoch = max(1, self.trainer.estimated_stepping_batches // max(1, self.trainer.max_epochs))
        warm_steps = h.warmup_epochs * per_epoch

        def factor(step: int) -> float:
            epoch = step // per_epoch
            decay = h.gamma ** sum(epoch >= m for m in h.milestones)
            if step < warm_steps:  # linear from warmup_factor to 1 over the warm-up (official: the first epoch)
                alpha = step / warm_steps
                return decay * (h.warmup_factor * (1 - alpha) + alpha)
            return decay

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the RPN / RoI samplers draw from torch's global generator: a resumed run continues its stream exactly
        checkpoint["oimnet_pp"] = {"torch_rng": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("oimnet_pp", {})
        if "torch_rng" in state and self.trainer is not None and self.trainer.state.fn == "fit":
            torch.set_rng_state(state["torch_rng"])

    # ---- training -------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.trainer.datamodule.train_set.epoch = self.current_epoch  # seeds the flips of this epoch

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets, _ = batch
        losses = self.net(images, targets)
        loss = sum(losses.values())
        n = len(images)
        for k, v in losses.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    # ---- evaluation -----------------------------------------------------------------------------------------
    def _eval_step(self, batch, dataloader_idx: int) -> None:
        if dataloader_idx == 0:
            images, targets, index = batch
            if self.hparams.use_gt_boxes:
                boxes = [t["boxes"] for t in targets]
                emb = self.net.embed_boxes(images, boxes)
                outs = [{"boxes": b, "scores": torch.ones(len(b)), "embeddings": e} for b, e in zip(boxes, emb)]
            else:
                outs = self.net.detect(images)
            for i, o in zip(index.tolist(), outs):
                det = torch.cat([o["boxes"], o["scores"].to(o["boxes"])[:, None]], 1).float().cpu().numpy()
                self._gallery_out.append((i, det, o["embeddings"].float().cpu().numpy()))
            return
        images, boxes, index = batch
        feats = self.net.embed_boxes(images, boxes)
        context = [None] * len(images)
        if self.hparams.cbgm:  # the query image as a gallery image, the query box first
            k2 = 3 if self._is_cuhk() else 4
            dets = self.net.detect(images)
            context = [torch.cat([f, d["embeddings"]])[:k2].float().cpu().numpy() for f, d in zip(feats, dets)]
        for i, f, c in zip(index.tolist(), feats, context):
            self._query_out.append((i, f[0].float().cpu().numpy(), c))

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def _is_cuhk(self) -> bool:
        return self.trainer.datamodule.data.layout == "cuhk_sysu"

    def _collect(self):
        gallery = sorted(_gather(self._gallery_out), key=lambda t: t[0])
        queries = sorted(_gather(self._query_out), key=lambda t: t[0])
        self._gallery_out, self._query_out = [], []
        return gallery, queries

    def evaluate(self, gallery, queries, gallery_size: int | None = None, keep_ranking: int = 0) -> tuple[dict, object]:
        """Detection and search metrics of collected gallery / query outputs (see the module docstring)."""
        data = self.trainer.datamodule.data
        dets = [g[1] for g in gallery]
        feats = [g[2] for g in gallery]
        qfeats = np.stack([q[1] for q in queries])
        det = evaluate_detection(data.gallery, dets, det_thresh=0.01)
        kwargs: dict = {"det_thresh": self.hparams.det_thresh, "keep_ranking": keep_ranking}
        if self.hparams.cbgm:
            cuhk = self._is_cuhk()
            kwargs |= {
                "cbgm": True,
                "query_dets_feats": [q[2] for q in queries],
                "k1": 10 if cuhk else 30,
                "k2": 3 if cuhk else 4,
            }
        if self._is_cuhk():
            size = gallery_size or self.hparams.gallery_size
            if size not in data.protocols:
                raise ValueError(f"model.gallery_size={size}: the dataset has TestG{sorted(data.protocols)} only")
            kwargs["protocol"] = data.protocols[size]
        else:
            kwargs["ignore_cam_id"] = self.hparams.ignore_cam_id
        result = evaluate_search(data.gallery, dets, feats, data.queries, qfeats, **kwargs)
        metrics = {"det_ap": det["ap"], "det_recall": det["recall"]} | result.metrics()
        return metrics, result

    def chance_level(self, gallery, queries, draws: int = 5) -> dict[str, float]:
        """Search metrics with random unit features for the same detections and queries (mean of seeded draws)."""
        rng = np.random.default_rng(0)
        out: dict[str, list[float]] = {}
        for _ in range(draws):
            noise = lambda a: a if a is None else rng.standard_normal(a.shape).astype(np.float32)
            g = [(i, d, noise(f)) for i, d, f in gallery]
            q = [(i, noise(f), noise(c)) for i, f, c in queries]
            metrics, _ = self.evaluate(g, q)
            for k, v in metrics.items():
                out.setdefault(k, []).append(v)
        return {k: float(np.mean(v)) for k, v in out.items()}

    def on_validation_epoch_end(self) -> None:
        gallery, queries = self._collect()
        if self.trainer.sanity_checking or not gallery or not queries:
            return
        metrics, _ = self.evaluate(gallery, queries)
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, add_dataloader_idx=False)

    def on_test_epoch_end(self) -> None:
        gallery, queries = self._collect()
        metrics, result = self.evaluate(gallery, queries, keep_ranking=5 if self.hparams.plot else 0)
        self.results = metrics
        self.log_dict({f"test/{k}": v for k, v in metrics.items()}, add_dataloader_idx=False)
        chance = self.chance_level(gallery, queries)
        self.log_dict({f"test/chance_{k}": chance[k] for k in ("mAP", "top1")}, add_dataloader_idx=False)
        if not self.trainer.is_global_zero:
            return
        print("person search (test):", flush=True)
        print(f"  detection  AP={metrics['det_ap']:.4f} recall={metrics['det_recall']:.4f}", flush=True)
        print(
            f"  search     mAP={metrics['mAP']:.4f} top-1={metrics['top1']:.4f} top-5={metrics['top5']:.4f} "
            f"top-10={metrics['top10']:.4f}",
            flush=True,
        )
        print(
            f"  chance     mAP={chance['mAP']:.4f} top-1={chance['top1']:.4f} (random features, same detections)",
            flush=True,
        )
        if self.hparams.gallery_curve and self._is_cuhk():
            for size in sorted(self.trainer.datamodule.data.protocols):
                m, _ = self.evaluate(gallery, queries, gallery_size=size)
                print(f"  gallery {size:5d}: mAP={m['mAP']:.4f} top-1={m['top1']:.4f}", flush=True)
        if self.hparams.plot:
            folder = Path(self.trainer.log_dir or ".") / "plots"
            from oimnet_pp.plot import plot_rankings

            paths = plot_rankings(self.trainer.datamodule.data, result, folder, self.hparams.plot_queries)
            print(f"  plots: {len(paths)} queries with their top-5 hits in {folder}", flush=True)
