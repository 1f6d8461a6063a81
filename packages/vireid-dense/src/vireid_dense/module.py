"""LbA as a LightningModule: the AGW baseline (ID + batch-hard triplet on the GeM feature) plus CMAlign on layer3
and layer4 with the ID-consistency and dense triplet losses (Park et al., ICCV'21, Eq. 8):

    L = L_ID + L_Tri + lw_ic * L_IC + lw_dt * (L_DT^3 + L_DT^4),
    L_IC = CE(cls(BN(GeM(layer4(f_hat^3))))) + CE(cls(BN(GeM(f_hat^4)))),

with f_hat the positive reconstructions and the anchors' labels. `method="baseline"` trains the first two terms
only. CMAlign has no parameters and is not called at test time, so the test cost equals the baseline's.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from cvlab_shared.distributed import all_gather_rows
from vireid_dense.cmalign import SEMANTICS, CMAlign
from vireid_dense.losses import batch_hard_triplet_loss, lr_factor
from vireid_dense.models import TwoStreamNet

METHODS = ("baseline", "full")
TABLE_KEYS = ("rank1", "mAP", "mINP")


class LbAModule(pl.LightningModule):
    """LbA (Park et al., ICCV'21).

    Args:
        method: "full" (CMAlign losses) or "baseline" (ID + triplet only).
        backbone: "resnet50" (paper) or "tiny" (CPU).
        width: base width of the tiny backbone.
        pretrained: optional ImageNet state-dict file for the ResNet-50 (both stems and the shared stages).
        lr: learning rate of the BNNeck and classifier (0.1); the backbone gets lr * backbone_lr_ratio.
        backbone_lr_ratio: 0.1 (official optimiser groups).
        momentum: SGD momentum (0.9, Nesterov).
        weight_decay: 5e-4.
        warmup_epochs: linear warm-up epochs (10).
        milestones: epochs of the x0.1 steps ((20, 50)).
        margin: batch-hard and dense triplet margin (0.3).
        temperature: CMAlign softmax temperature beta (50).
        lw_ic: weight of the ID-consistency loss (1).
        lw_dt: weight of the dense triplet loss (0.5, `--lw_dt`).
        dt_semantics: "paper" per-sample co-mask weighting, or "legacy" (the PyTorch<=1.7 broadcast).
        plot_path: at the end of `test`, save the dense correspondences and person masks of a visible and an
            infrared image of one test identity to this PNG (`vireid-dense test --plot PATH`).
        seed: seed of CMAlign's partner draws.
    """

    def __init__(
        self,
        method: str = "full",
        backbone: str = "resnet50",
        width: int = 16,
        pretrained: str | None = None,
        lr: float = 0.1,
        backbone_lr_ratio: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        warmup_epochs: int = 10,
        milestones: tuple[int, ...] = (20, 50),
        margin: float = 0.3,
        temperature: float = 50.0,
        lw_ic: float = 1.0,
        lw_dt: float = 0.5,
        dt_semantics: str = "paper",
        plot_path: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if dt_semantics not in SEMANTICS:
            raise ValueError(f"dt_semantics must be one of {SEMANTICS}, got {dt_semantics!r}")
        # plot_path is not a hyper-parameter: a checkpoint's saved value must not override `test --plot`.
        self.save_hyperparameters(ignore=["plot_path"])
        self.plot_path = plot_path
        self.net: TwoStreamNet | None = None
        self.align3: CMAlign | None = None
        self.align4: CMAlign | None = None
        self._feats: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.results: dict[str, float] = {}
        # the last test's metrics; the package prints its own table, so the core CLI adds no 'test:' line
        self.test_results: dict[str, float] = {}

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        dm.setup(stage)
        if self.net is None:
            h = self.hparams
            self.net = TwoStreamNet(dm.num_classes, h.backbone, h.width, h.pretrained)
            ids, pos = dm.hparams.num_ids, dm.hparams.num_pos
            self.align3 = CMAlign(ids, pos, h.temperature, h.margin, h.dt_semantics, seed=h.seed)
            self.align4 = CMAlign(ids, pos, h.temperature, h.margin, h.dt_semantics, seed=h.seed + 1)

    def configure_optimizers(self):
        h = self.hparams
        head = list(self.net.bnneck.parameters()) + list(self.net.classifier.parameters())
        head_ids = {id(p) for p in head}
        backbone = [p for p in self.net.parameters() if id(p) not in head_ids]
        opt = torch.optim.SGD(
            [{"params": backbone, "lr": h.lr * h.backbone_lr_ratio}, {"params": head, "lr": h.lr}],
            lr=h.lr,
            momentum=h.momentum,
            weight_decay=h.weight_decay,
            nesterov=True,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, h.warmup_epochs, tuple(h.milestones)))
        return {"optimizer": opt, "lr_scheduler": schedule}

    # ---- training -------------------------------------------------------------------------------------------------
    def losses(self, xv: torch.Tensor, xt: torch.Tensor, yv: torch.Tensor, yt: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every loss term of one batch (visible and infrared halves of the same identities)."""
        h = self.hparams
        labels = torch.cat([yv, yt])
        f3, f4 = self.net.maps(xv, xt)
        out = self.net.head(f4)
        terms = {
            "id": F.cross_entropy(out.logits, labels),
            "tri": batch_hard_triplet_loss(out.features, labels, h.margin),
        }
        total = terms["id"] + terms["tri"]
        if h.method == "full":
            b = len(xv)
            a3 = self.align3(f3[:b], f3[b:])
            a4 = self.align4(f4[:b], f4[b:])
            if h.lw_ic:
                ic3 = self.net.head(self.net.layer4(a3.recon_pos)).logits
                ic4 = self.net.head(a4.recon_pos).logits
                terms["ic"] = F.cross_entropy(ic3, labels) + F.cross_entropy(ic4, labels)
                total = total + h.lw_ic * terms["ic"]
            terms["dt"] = a3.loss + a4.loss
            total = total + h.lw_dt * terms["dt"]
        terms["loss"] = total
        terms["acc"] = (out.logits.argmax(1) == labels).float().mean()
        return terms

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        xv, xt, yv, yt = batch
        terms = self.losses(xv, xt, yv, yt)
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name in ("loss", "acc"))
        return terms["loss"]

    # ---- evaluation -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_batch(self, images: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        """Test descriptors: each image through the stem of its modality (no CMAlign)."""
        feats = images.new_zeros(len(images), self.net.feature_dim)
        for flag, modality in ((False, "visible"), (True, "infrared")):
            rows = (infrared == flag).nonzero()[:, 0]
            if len(rows):
                feats[rows] = self.net.embed(images[rows], modality)
        return feats

    def validation_step(self, batch, batch_idx: int) -> None:
        images, _, _, index = batch
        infrared = torch.tensor(self.trainer.datamodule.test_infrared, device=self.device)[index]
        self._feats.append((self.embed_batch(images, infrared).float(), index))

    def test_step(self, batch, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_validation_epoch_start(self) -> None:
        self._feats = []

    def on_test_epoch_start(self) -> None:
        self._feats = []

    def _finish(self, stage: str) -> None:
        dm = self.trainer.datamodule
        dim = self.net.feature_dim
        feats = torch.cat([f for f, _ in self._feats]) if self._feats else torch.zeros(0, dim, device=self.device)
        index = (
            torch.cat([i for _, i in self._feats])
            if self._feats
            else torch.zeros(0, dtype=torch.long, device=self.device)
        )
        feats, index = all_gather_rows(feats), all_gather_rows(index)
        full = torch.zeros(len(dm.test_records), dim, device=self.device)
        full[index] = feats
        self._feats = []
        self.results = dm.evaluate(full)
        for name, value in self.results.items():
            self.log(f"{stage}/{name}", value, rank_zero_only=False, sync_dist=False)
        if stage == "test":
            self.test_results = dict(self.results)
        if stage == "test" and self.trainer.is_global_zero:
            print(results_table(self.results, dm.hparams.dataset, self.hparams.method), flush=True)
            if self.plot_path:
                from vireid_dense.plot import save_correspondence_plot

                path = save_correspondence_plot(self, dm, Path(self.plot_path))
                print(f"dense correspondences and person masks saved to {path}", flush=True)

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    # ---- checkpoint state outside the parameters ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.align3 is not None:
            checkpoint["cmalign_rng"] = [self.align3.rng.getstate(), self.align4.rng.getstate()]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("cmalign_rng")
        if states and self.align3 is not None:
            self.align3.rng.setstate(states[0])
            self.align4.rng.setstate(states[1])


def results_table(results: dict[str, float], dataset: str, method: str) -> str:
    """The paper's table rows: SYSU all/indoor search or RegDB both directions, rank-1 / mAP / mINP in %."""
    rows = (("all-search", "all"), ("indoor-search", "indoor")) if dataset == "sysu" else (
        ("visible->thermal", "v2t"), ("thermal->visible", "t2v"))
    lines = [f"LbA ({method}) on {dataset}", f"{'setting':18s} {'rank-1':>7s} {'mAP':>7s} {'mINP':>7s}"]
    for label, key in rows:
        lines.append(f"{label:18s} " + " ".join(f"{100 * results[f'{key}_{m}']:7.2f}" for m in TABLE_KEYS))
    return "\n".join(lines)
