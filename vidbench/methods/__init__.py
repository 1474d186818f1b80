"""One LightningModule per method on a shared base; ``build_method`` picks the registered one from the config.

Methods register themselves (:mod:`vidbench.methods.registry`): the modules of this package, installed
plugins (entry-point group ``vidbench.methods``) and ``package.module:Class`` paths in recipes.
"""

from __future__ import annotations

from omegaconf import DictConfig

from .base import RetrievalMethod
from .registry import method_class


def build_method(cfg: DictConfig) -> RetrievalMethod:
    return method_class(cfg.method.name)(cfg)


__all__ = ["RetrievalMethod", "build_method", "method_class"]
