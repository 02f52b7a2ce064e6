"""Calibration of the structure model's outputs (``tilecat calibrate structure``).

Two steps on a labelled calibration set, both stored in the card's
``uncertainty_calibration`` section and applied by the structure head:

1. **Mean map.** Each target's mean (ln r50, ln n, e1, e2) is mapped by a straight line
   ``mu' = a + b mu`` fitted by median (L1) regression of the truth on ``mu``. A network
   trained with a Gaussian negative log-likelihood pulls its means towards the middle of
   the training distribution where the stamps say little (regression to the mean; the
   NLL also down-weights the residuals of large-sigma objects); for ln r50 that is a
   size-dependent shrinkage: the largest galaxies, whose outskirts leave the stamp,
   come out smallest relative to truth. The line removes the median bias at every
   predicted value. For e1 and e2 the line has no intercept (``a = 0``): the simulated
   ellipticities are symmetric about 0, so an intercept would only fit noise.
2. **Sigma scale.** The network's Gaussian ``sigma`` (times ``b``) of each target is
   scaled by one factor so that the median of ``|truth - mu'| / sigma'`` is that of a
   unit Gaussian (0.6745): then 68.3% of the truths fall within +-1 sigma when the
   residuals are Gaussian.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GAUSS_MEDIAN_ABS", "fit_mean_map", "apply_mean_map", "fit_sigma_scale",
           "calibrate_structure"]

#: median of |z| for z ~ N(0, 1)
GAUSS_MEDIAN_ABS = 0.6744897501960817


def fit_mean_map(mu: np.ndarray, truth: np.ndarray, *,
                 intercept: tuple[bool, ...] = (True, True, False, False)
                 ) -> tuple[list[float], list[float]]:
    """Per-target line ``truth ~ a + b mu`` by median (L1) regression.

    Parameters
    ----------
    mu, truth : ndarray, shape (N, K)
        Predicted means and true values in the network's target space; NaN truths are
        ignored.
    intercept : tuple of bool, length K
        Whether target ``k``'s line has an intercept (else ``a = 0``).

    Returns
    -------
    (intercept, slope) : two lists of float, length K
        Identity (0, 1) for a target with fewer than 20 finite truths.
    """
    from scipy.optimize import linprog
    from scipy.sparse import csr_array, hstack, identity

    a_out, b_out = [], []
    for k in range(mu.shape[1]):
        ok = np.isfinite(truth[:, k]) & np.isfinite(mu[:, k])
        if ok.sum() < 20:
            a_out.append(0.0)
            b_out.append(1.0)
            continue
        x, y = mu[ok, k], truth[ok, k]
        cols = [np.ones_like(x), x] if intercept[k] else [x]
        design = np.stack(cols, axis=1)
        n, p = design.shape
        # min sum(u + v) s.t. design @ beta + u - v = y, u, v >= 0 (beta free): exact LAD
        eye = identity(n, format="csr")
        a_eq = hstack([csr_array(design), eye, -eye], format="csr")
        cost = np.concatenate([np.zeros(p), np.ones(2 * n)])
        bounds = [(None, None)] * p + [(0, None)] * (2 * n)
        res = linprog(cost, A_eq=a_eq, b_eq=y, bounds=bounds, method="highs")
        if not res.success:
            raise RuntimeError(f"median regression of target {k} failed: {res.message}")
        beta = res.x[:p]
        a_out.append(float(beta[0]) if intercept[k] else 0.0)
        b_out.append(float(beta[-1]))
    return a_out, b_out


def apply_mean_map(mu: np.ndarray, sigma: np.ndarray, intercept: np.ndarray,
                   slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mu' = a + b mu`` and ``sigma' = |b| sigma`` per target.

    Parameters
    ----------
    mu, sigma : ndarray, shape (N, K)
        Means and 1-sigma uncertainties in the network's target space.
    intercept, slope : ndarray, shape (K,)

    Returns
    -------
    (mu', sigma') : ndarray, shape (N, K) each
    """
    return intercept + slope * mu, np.abs(slope) * sigma


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
    mu0, sigma0, t = raw[:, :k], raw[:, k:], truth[keep]
    icpt, slope = fit_mean_map(mu0, t)
    mu, sigma = apply_mean_map(mu0, sigma0, np.asarray(icpt), np.asarray(slope))
    scale = fit_sigma_scale(mu, sigma, t)

    def _within(m: np.ndarray, s: np.ndarray, j: int) -> float:
        ok = np.isfinite(t[:, j])
        return float(np.mean(np.abs(t[ok, j] - m[ok, j]) < s[ok, j]))

    def _bias(m: np.ndarray, j: int) -> float:
        ok = np.isfinite(t[:, j])
        return float(np.median(m[ok, j] - t[ok, j]))

    before = [_within(mu0, sigma0, j) for j in range(k)]
    after = [_within(mu, s * sigma, j) for j, s in enumerate(scale)]
    bias_before = [_bias(mu0, j) for j in range(k)]
    bias_after = [_bias(mu, j) for j in range(k)]
    for j, name in enumerate(TARGETS):
        log(f"structure/{name}: mean -> {icpt[j]:+.4f} + {slope[j]:.4f} mean, median bias "
            f"{bias_before[j]:+.4f} -> {bias_after[j]:+.4f}; sigma x {scale[j]:.3f}; "
            f"within 1 sigma {before[j]:.3f} -> {after[j]:.3f}")
    return {
        "method": ("per-target mean map mu' = a + b mu (median regression of truth on mu; "
                   "a = 0 for e1, e2), then sigma' = s |b| sigma with "
                   "median |truth - mu'| / sigma' = 0.6745"),
        "targets": list(TARGETS),
        "mean_intercept": [round(v, 6) for v in icpt],
        "mean_slope": [round(v, 6) for v in slope],
        "median_bias_before": [round(v, 5) for v in bias_before],
        "median_bias_after": [round(v, 5) for v in bias_after],
        "sigma_scale": [round(s, 6) for s in scale],
        "within_1sigma_before": [round(v, 4) for v in before],
        "within_1sigma_after": [round(v, 4) for v in after],
        "fitted_on": {"path": Path(data).name, "kind": "stamps", "n_objects": int(keep.sum()),
                      "seed": ss.attrs.get("seed"), "heldout": ss.attrs.get("heldout")},
    }
