"""STMN networks."""

from stmn.models.network import STMN, StmnOutput, build_model

__all__ = ["STMN", "StmnOutput", "build_model"]
