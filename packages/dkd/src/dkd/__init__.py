"""DKD (Baek et al., NeurIPS 2022): decomposed knowledge distillation for class-incremental semantic segmentation."""

from dkd.losses import DKDLoss, TeacherOutputs, ac_loss, kd_loss, mbce_loss, positive_negative_logits

__all__ = ["DKDLoss", "TeacherOutputs", "ac_loss", "kd_loss", "mbce_loss", "positive_negative_logits"]
