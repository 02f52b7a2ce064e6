"""The ``photoz`` inference head: binned redshift PDF + summary statistics per object.

Columns (DESIGN.md §4): ``z_pdf`` (list<float16>, probability of each bin of the
grid stored in the file metadata under ``tilecat.z_grid``), ``z_mean``, ``z_median``,
``z_mode``, ``z_std``, ``z_odds``. The module also needs the cutouts' per-band
background noise ``sigma(object, band)`` (colours are not in arcsinh(F/sigma) stamps
alone; survey zeropoints other than 22.5 are converted to nanomaggies here) and,
for models trained with it, the PSF FWHM per band (``psf_fwhm``, given by the engine).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..infer.heads import Column, Head, LoadedHead, RawOutput, model_location
from .grid import META_KEY, ZGrid
from .summary import normalise, pdf_summary

__all__ = ["PhotoZHead", "HEAD", "COLUMNS", "PRIOR_KEY"]

#: file-metadata key of the training-set N(z) (the prior P_T of each bin)
PRIOR_KEY = "tilecat.z_prior"

COLUMNS: tuple[Column, ...] = (
    Column("z_pdf", "list<float16>", "",
           "photo-z PDF: probability of each redshift bin (sums to 1; bins in the file "
           "metadata tilecat.z_grid), raw (training prior)"),
    Column("z_mean", "float32", "", "mean of the photo-z PDF"),
    Column("z_median", "float32", "", "median of the photo-z PDF"),
    Column("z_mode", "float32", "", "centre of the most probable redshift bin"),
    Column("z_std", "float32", "", "standard deviation of the photo-z PDF"),
    Column("z_odds", "float32", "",
           "probability within z_mode +- 0.06 (1 + z_mode) (photo-z quality)"),
)


class PhotoZHead(Head):
    """Photo-z CNN (weights ``tilecat/data/models/photoz``)."""

    name = "photoz"

    def load(self, config: Mapping[str, Any], device: Any) -> LoadedHead:
        import torch

        from ..models import load_model
        from ..morphology.net import fuse_all
        from .model import build

        module, card = load_model(model_location(config, self.name), build, device)
        fuse_all(module)
        if device.type == "cpu":
            module = module.to(memory_format=torch.channels_last)
        survey = config.get("survey") or {}
        zps = survey.get("zeropoints") or {}
        bands = list(card["input"]["bands"])
        # sigma is in the survey's flux unit: nanomaggies per unit = 10^(-0.4 (zp - 22.5))
        scale = [10.0 ** (-0.4 * (float(zps.get(b, 22.5)) - 22.5)) for b in bands]
        module.flux_scale.copy_(torch.tensor(scale, dtype=torch.float32))
        grid = ZGrid.from_meta(card["z_grid"])
        return LoadedHead(module=module, card=card, columns=COLUMNS,
                          extra={"grid": grid}, inputs=module.inputs)

    def postprocess(self, raw: RawOutput, loaded: LoadedHead) -> dict[str, np.ndarray]:
        grid: ZGrid = loaded.extra["grid"]
        p = normalise(np.asarray(raw, dtype=np.float64).reshape(-1, grid.n_bins))
        cols: dict[str, np.ndarray] = {k: v.astype(np.float32)
                                       for k, v in pdf_summary(p, grid).items()}
        cols["z_pdf"] = p.astype(np.float16)
        return cols

    def file_metadata(self, loaded: LoadedHead) -> dict[str, Any]:
        grid: ZGrid = loaded.extra["grid"]
        out: dict[str, Any] = {META_KEY: grid.to_meta()}
        prior = loaded.card.get("prior")
        if prior is not None:
            out[PRIOR_KEY] = prior
        return out

    def output_index(self, loaded: LoadedHead, answer: str) -> int:
        """Raw output index of the bin containing redshift ``answer`` (e.g. ``"0.4"``)."""
        from ..errors import ModelError

        grid: ZGrid = loaded.extra["grid"]
        try:
            z = float(answer.removeprefix("z_"))
        except ValueError as exc:
            raise ModelError(f"model 'photoz': outputs are redshift bins; give a redshift, "
                             f"not {answer!r}") from exc
        return int(np.clip(np.floor((z - grid.z_min) / grid.width), 0, grid.n_bins - 1))


HEAD = PhotoZHead()
