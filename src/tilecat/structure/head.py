"""The ``structure`` inference head: r50, Sersic n, e1, e2 with 1-sigma uncertainties."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ModelError
from ..infer.heads import Column, Head, LoadedHead, RawOutput, model_location

__all__ = ["StructureHead", "HEAD", "COLUMNS"]

COLUMNS: tuple[Column, ...] = (
    Column("struct_r50", "float32", "arcsec",
           "CNN half-light radius of the intrinsic (PSF-corrected) profile"),
    Column("struct_r50_err", "float32", "arcsec", "1-sigma uncertainty of struct_r50"),
    Column("struct_sersic_n", "float32", "", "CNN Sersic index"),
    Column("struct_sersic_n_err", "float32", "", "1-sigma uncertainty of struct_sersic_n"),
    Column("struct_e1", "float32", "", "CNN ellipticity e1 = (1-q)/(1+q) cos(2 phi)"),
    Column("struct_e1_err", "float32", "", "1-sigma uncertainty of struct_e1"),
    Column("struct_e2", "float32", "", "CNN ellipticity e2 = (1-q)/(1+q) sin(2 phi)"),
    Column("struct_e2_err", "float32", "", "1-sigma uncertainty of struct_e2"),
)


class StructureHead(Head):
    """Mirror-averaged structure CNN (weights ``tilecat/data/models/structure``)."""

    name = "structure"

    def load(self, config: Mapping[str, Any], device: Any) -> LoadedHead:
        from ..models import load_model
        from ..morphology.net import fuse_all
        from .model import build

        module, card = load_model(model_location(config, self.name), build, device)
        fuse_all(module)
        if device.type == "cpu":
            import torch

            module = module.to(memory_format=torch.channels_last)
        pixscale = float(config.get("survey", {}).get("pixel_scale")
                         or card["input"]["pixel_scale"])
        want = float(card["input"].get("pixel_scale", pixscale))
        if abs(pixscale / want - 1) > 0.05:
            raise ModelError(f"model 'structure' was trained at {want} arcsec/pixel, the "
                             f"survey has {pixscale} arcsec/pixel")
        arch = card.get("arch") or {}
        psf = bool(arch.get("psf_input", False))
        inputs: tuple[str, ...] = ()
        if psf:  # PSF FWHM [arcsec] and, for newer cards, the Moffat beta, per band
            inputs = (("psf_fwhm", "psf_beta") if arch.get("psf_beta_input")
                      else ("psf_fwhm",))
        cal = card.get("uncertainty_calibration") or {}
        scale = cal.get("sigma_scale") or [1.0] * 4
        # older cards have no mean map: identity
        icpt = cal.get("mean_intercept") or [0.0] * 4
        slope = cal.get("mean_slope") or [1.0] * 4
        return LoadedHead(module=module, card=card, columns=COLUMNS,
                          extra={"pixel_scale": pixscale,
                                 "sigma_scale": np.asarray(scale, np.float64),
                                 "mean_intercept": np.asarray(icpt, np.float64),
                                 "mean_slope": np.asarray(slope, np.float64)},
                          inputs=inputs)

    def output_index(self, loaded: LoadedHead, answer: str) -> int:
        """Raw output index of ``r50``, ``sersic_n``, ``e1``, ``e2`` (the means)."""
        names = ["r50", "sersic_n", "e1", "e2"]
        key = answer.removeprefix("struct_")
        if key not in names:
            raise ModelError(f"model 'structure': can explain {names}, not {answer!r}")
        return names.index(key)

    def postprocess(self, raw: RawOutput, loaded: LoadedHead) -> dict[str, np.ndarray]:
        from .calibrate import apply_mean_map

        a = np.asarray(raw, dtype=np.float64)
        mu, sig = apply_mean_map(a[:, :4], a[:, 4:], loaded.extra.get("mean_intercept", 0.0),
                                 loaded.extra.get("mean_slope", 1.0))
        sig = sig * loaded.extra.get("sigma_scale", 1.0)
        r50 = np.exp(mu[:, 0]) * loaded.extra["pixel_scale"]
        n = np.exp(mu[:, 1])
        cols = {
            "struct_r50": r50, "struct_r50_err": r50 * sig[:, 0],
            "struct_sersic_n": n, "struct_sersic_n_err": n * sig[:, 1],
            "struct_e1": mu[:, 2], "struct_e1_err": sig[:, 2],
            "struct_e2": mu[:, 3], "struct_e2_err": sig[:, 3],
        }
        return {k: v.astype(np.float32) for k, v in cols.items()}


HEAD = StructureHead()
