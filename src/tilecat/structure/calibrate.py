"""Calibration of the structure model's uncertainties (``tilecat calibrate structure``).

The network's Gaussian ``sigma`` of each target (ln r50, ln n, e1, e2) is scaled by one
factor per target so that, on a labelled calibration set, the median of
``|truth - mu| / sigma`` is that of a unit Gaussian (0.6745): then 68.3% of the truths
fall within +-1 sigma when the residuals are Gaussian. The factors go to the card's
``uncertainty_calibration`` section and the structure head applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GAUSS_MEDIAN_ABS", "fit_sigma_scale", "calibrate_structure"]

#: median of |z| for z ~ N(0, 1)
GAUSS_MEDIAN_ABS = 0.6744897501960817


def fit_sigma_scale(mu: np.ndarray, sigma: np.ndarray, truth: np.ndarray) -> list[float]:
    """Per-target factors ``s`` with median(|truth - mu| / (s sigma)) = 0.6745.

    Parameters
    ----------
    mu, sigma, truth : ndarray, shape (N, K)
        Predicted means, predicted 1-sigma and true values in the network's target
        space (ln r50 [r50 in pixels], ln n, e1, e2); NaN truths are ignored.

    Returns
    -------
    list of float, length K
        1.0 for a target without finite truths.
    """
    out = []
    for k in range(mu.shape[1]):
        ok = np.isfinite(truth[:, k]) & np.isfinite(mu[:, k]) & (sigma[:, k] > 0)
        if not ok.any():
            out.append(1.0)
            continue
        z = np.abs(truth[ok, k] - mu[ok, k]) / sigma[ok, k]
        out.append(float(np.median(z) / GAUSS_MEDIAN_ABS))
    return out


def calibrate_structure(card: Mapping[str, Any], model_dir: Path, data: str | Path, *,
                        limit: int | None = None, batch_size: int = 256,
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the (uncalibrated) structure model over a labelled stamp set; fit the factors.

    Parameters
    ----------
    card : mapping
        The structure model's card.
    model_dir : Path
        Its directory.
    data : path
        Galaxy stamp set with truth (``tilecat simulate-stamps --kind galaxy``); with
        ``psf_fwhm`` (and ``psf_beta``) when the model takes them.
    limit : int, optional
        Use the first ``limit`` stamps.

    Returns
    -------
    dict
        The ``uncertainty_calibration`` section: ``sigma_scale`` (per target),
        ``targets``, ``fitted_on``, ``within_1sigma`` before/after on the set.
    """
    import torch

    from ..models import load_model
    from ..morphology.dataset import load_stamps
    from .model import TARGETS, build, predict_structure
    from .train import model_inputs, structure_targets

    ss = load_stamps(data, limit)
    truth = structure_targets(ss.labels, ss.pixel_scale)
    keep = np.isfinite(truth[:, 0])
    if "t_class" in ss.labels:
        keep &= np.asarray(ss.labels["t_class"]) != "artifact"
    module, _ = load_model(model_dir, build, torch.device("cpu"))
    inputs = [a[keep] for a in model_inputs(card.get("arch") or {}, ss, str(data))]
    log(f"running structure over {int(keep.sum())} labelled galaxies of {data}")
    raw = predict_structure(module, ss.stamps[keep], inputs, batch_size=batch_size)
    k = len(TARGETS)
    mu, sigma, t = raw[:, :k], raw[:, k:], truth[keep]
    scale = fit_sigma_scale(mu, sigma, t)
    before = [float(np.mean((np.abs(t[:, j] - mu[:, j]) < sigma[:, j])[np.isfinite(t[:, j])]))
              for j in range(k)]
    after = [float(np.mean((np.abs(t[:, j] - mu[:, j]) < s * sigma[:, j])[np.isfinite(t[:, j])]))
             for j, s in enumerate(scale)]
    for name, s, b, a in zip(TARGETS, scale, before, after, strict=True):
        log(f"structure/{name}: sigma x {s:.3f}; within 1 sigma {b:.3f} -> {a:.3f}")
    return {
        "method": "per-target sigma scale: median |truth - mu| / sigma = 0.6745",
        "targets": list(TARGETS),
        "sigma_scale": [round(s, 6) for s in scale],
        "within_1sigma_before": [round(v, 4) for v in before],
        "within_1sigma_after": [round(v, 4) for v in after],
        "fitted_on": {"path": Path(data).name, "kind": "stamps", "n_objects": int(keep.sum()),
                      "seed": ss.attrs.get("seed"), "heldout": ss.attrs.get("heldout")},
    }
