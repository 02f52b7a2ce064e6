"""The ``latent`` inference head: VAE posterior means, outlier score, reconstruction chi^2.

Columns (DESIGN.md §4): ``latent`` (fixed_size_list<float32, 40>, posterior means,
deterministic); ``latent_outlier_score``: for current cards ``-log10`` of the
one-sided tail probability of the reconstruction chi^2 per pixel inside the central
disc the card names (``recon_chi2_core``), standardised against the training galaxies
(:func:`tilecat.latent.outlier.chi2_score`; the module docstring of
:mod:`tilecat.latent.outlier` gives the measurements behind the choice); for earlier
cards the Fisher combination with the Mahalanobis distance, or the distance itself;
``latent_mahalanobis`` (Mahalanobis distance of the latent to the training latents);
``recon_chi2`` (reconstruction chi^2 per pixel over the whole stamp, noise model of
:mod:`tilecat.latent.noise`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..infer.heads import Column, Head, LoadedHead, RawOutput, model_location
from .outlier import chi2_statistic, gaussian_from_card, mahalanobis, outlier_score

__all__ = ["LatentHead", "HEAD", "SCORE_DESCRIPTIONS", "columns", "score_kind"]


#: ``latent_outlier_score`` descriptions, by the card's score kind
SCORE_DESCRIPTIONS = {
    "chi2_core": ("-log10 of the one-sided tail probability of the log reconstruction "
                  "chi^2 per pixel inside the central disc the model card names "
                  "(outlier_standardisation.core_radius_px), standardised by the training "
                  "galaxies' median and 1.4826 MAD"),
    "combined": ("-log10 of the Fisher-combined one-sided tail probability of log "
                 "Mahalanobis distance (latent vs training latents) and log reconstruction "
                 "chi^2 per pixel, each standardised by the training galaxies' median and "
                 "1.4826 MAD"),
    "mahalanobis": ("Mahalanobis distance of the latent to the training-set latent "
                    "distribution"),
}


def score_kind(standard: Mapping[str, Any] | None) -> str:
    """A card's score kind (:data:`SCORE_DESCRIPTIONS` key) from its
    ``outlier_standardisation``."""
    if standard is None:
        return "mahalanobis"
    return "chi2_core" if standard.get("score") == "chi2_core" else "combined"


def columns(n_latent: int, kind: str = "chi2_core") -> tuple[Column, ...]:
    """The head's columns for ``n_latent`` latents and a score ``kind``."""
    return (
        Column("latent", f"fixed_size_list<float32,{int(n_latent)}>", "",
               f"VAE posterior means of the {int(n_latent)} latent variables"),
        Column("latent_outlier_score", "float32", "", SCORE_DESCRIPTIONS[kind]),
        Column("latent_mahalanobis", "float32", "",
               "Mahalanobis distance of the latent to the training-set latent distribution "
               "(mean and covariance in the model card)"),
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
                          columns=columns(len(mean), score_kind(standard)),
                          extra={"mean": mean, "cov": cov, "standard": standard})

    def postprocess(self, raw: RawOutput, loaded: LoadedHead) -> dict[str, np.ndarray]:
        assert isinstance(raw, dict)
        lat = np.asarray(raw["latent"], np.float32)
        chi2 = np.asarray(raw["recon_chi2"], np.float32)
        dist = mahalanobis(lat, loaded.extra["mean"], loaded.extra["cov"])
        standard = loaded.extra.get("standard")
        stat = chi2 if standard is None else np.asarray(raw[chi2_statistic(standard)])
        score = outlier_score(dist, stat, standard)
        return {"latent": lat, "latent_outlier_score": score.astype(np.float32),
                "latent_mahalanobis": dist.astype(np.float32), "recon_chi2": chi2}

    def output_index(self, loaded: LoadedHead, answer: str) -> int:
        from ..errors import ModelError

        raise ModelError("model 'latent' has no class outputs to explain")


HEAD = LatentHead()
