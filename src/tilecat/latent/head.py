"""The ``latent`` inference head: VAE posterior means, outlier score, reconstruction chi^2.

Columns (DESIGN.md §4): ``latent`` (fixed_size_list<float32, 40>, posterior means,
deterministic), ``latent_outlier_score`` (Mahalanobis distance to the training
latents, mean and covariance from the model card), ``recon_chi2`` (reconstruction
chi^2 per pixel, noise model of :mod:`tilecat.latent.noise`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..infer.heads import Column, Head, LoadedHead, RawOutput, model_location
from .outlier import gaussian_from_card, mahalanobis

__all__ = ["LatentHead", "HEAD", "columns"]


def columns(n_latent: int) -> tuple[Column, ...]:
    """The head's columns for ``n_latent`` latents."""
    return (
        Column("latent", f"fixed_size_list<float32,{int(n_latent)}>", "",
               f"VAE posterior means of the {int(n_latent)} latent variables"),
        Column("latent_outlier_score", "float32", "",
               "Mahalanobis distance of the latent to the training-set latent distribution"),
        Column("recon_chi2", "float32", "",
               "VAE reconstruction chi^2 per pixel (background noise + 5% flux floor)"),
    )


class LatentHead(Head):
    """Convolutional VAE (weights ``tilecat/data/models/vae``)."""

    name = "latent"
    #: shipped model directory name (``tilecat/data/models/vae``)
    model_name = "vae"

    def load(self, config: Mapping[str, Any], device: Any) -> LoadedHead:
        import torch

        from ..models import load_model
        from ..morphology.net import fuse_all
        from .model import build

        dirs = (config.get("infer") or {}).get("model_dirs") or {}
        where = model_location(config, self.name) if self.name in dirs else self.model_name
        module, card = load_model(where, build, device)
        fuse_all(module)
        if device.type == "cpu":
            module = module.to(memory_format=torch.channels_last)
        mean, cov = gaussian_from_card(card["latent_distribution"])
        return LoadedHead(module=module, card=card, columns=columns(len(mean)),
                          extra={"mean": mean, "cov": cov})

    def postprocess(self, raw: RawOutput, loaded: LoadedHead) -> dict[str, np.ndarray]:
        assert isinstance(raw, dict)
        lat = np.asarray(raw["latent"], np.float32)
        score = mahalanobis(lat, loaded.extra["mean"], loaded.extra["cov"])
        return {"latent": lat, "latent_outlier_score": score.astype(np.float32),
                "recon_chi2": np.asarray(raw["recon_chi2"], np.float32)}

    def output_index(self, loaded: LoadedHead, answer: str) -> int:
        from ..errors import ModelError

        raise ModelError("model 'latent' has no class outputs to explain")


HEAD = LatentHead()
