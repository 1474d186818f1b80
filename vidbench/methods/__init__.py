"""One LightningModule per paper on a shared base; ``build_method`` picks it from the config."""

from __future__ import annotations

from omegaconf import DictConfig

from .base import RetrievalMethod


def method_class(name: str) -> type[RetrievalMethod]:
    if name == "clip4clip":
        from .clip4clip import Clip4Clip

        return Clip4Clip
    if name == "drl":
        from .drl import DRL

        return DRL
    if name == "eercf":
        from .eercf import EERCF

        return EERCF
    if name == "hcq":
        from .hcq import HCQ

        return HCQ
    if name == "hcq_mmt":
        from .hcq_mmt import HcqMmt

        return HcqMmt
    raise ValueError(f"unknown method '{name}'")


def build_method(cfg: DictConfig) -> RetrievalMethod:
    return method_class(cfg.method.name)(cfg)
