"""The ``latent`` inference head: VAE posterior means, outlier score, reconstruction chi^2.

Columns (DESIGN.md §4): ``latent`` (fixed_size_list<float32, 40>, posterior means,
deterministic), ``latent_outlier_score`` (``-log10`` of the Fisher-combined tail
probability of the Mahalanobis distance to the training latents and of the
reconstruction chi^2, both standardised against the training galaxies:
:func:`tilecat.latent.outlier.combined_score`; for a card without
``outlier_standardisation``, the Mahalanobis distance itself), ``recon_chi2``
(reconstruction chi^2 per pixel, noise model of :mod:`tilecat.latent.noise`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..infer.heads import Column, Head, LoadedHead, RawOutput, model_location
from .outlier import combined_score, gaussian_from_card, mahalanobis

__all__ = ["LatentHead", "HEAD", "columns"]


#: ``latent_outlier_score`` descriptions: combined score / legacy Mahalanobis distance
SCORE_COMBINED = ("-log10 of the Fisher-combined one-sided tail probability of log "
                  "Mahalanobis distance (latent vs training latents) and log recon_chi2, "
                  "each standardised by the training galaxies' median and 1.4826 MAD")
SCORE_MAHALANOBIS = ("Mahalanobis distance of the latent to the training-set latent "
                     "distribution")


def columns(n_latent: int, combined: bool = True) -> tuple[Column, ...]:
    """The head's columns for ``n_latent`` latents (``combined``: the combined score)."""
    return (
        Column("latent", f"fixed_size_list<float32,{int(n_latent)}>", "",
               f"VAE posterior means of the {int(n_latent)} latent variables"),
        Column("latent_outlier_score", "float32", "",
               SCORE_COMBINED if combined else SCORE_MAHALANOBIS),
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
        standard = card.get("outlier_standardisation")
        return LoadedHead(module=module, card=card,
                          columns=columns(len(mean), standard is not None),
                          extra={"mean": mean, "cov": cov, "standard": standard})

    def postprocess(self, raw: RawOutput, loaded: LoadedHead) -> dict[str, np.ndarray]:
        assert isinstance(raw, dict)
        lat = np.asarray(raw["latent"], np.float32)
        chi2 = np.asarray(raw["recon_chi2"], np.float32)
        score = mahalanobis(lat, loaded.extra["mean"], loaded.extra["cov"])
        standard = loaded.extra.get("standard")
        if standard is not None:
            score = combined_score(score, chi2, standard)
        return {"latent": lat, "latent_outlier_score": score.astype(np.float32),
                "recon_chi2": chi2}

    def output_index(self, loaded: LoadedHead, answer: str) -> int:
        from ..errors import ModelError

        raise ModelError("model 'latent' has no class outputs to explain")


HEAD = LatentHead()
