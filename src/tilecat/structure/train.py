"""Train the structure CNN (r50, Sersic n, e1, e2 + uncertainties) on simulated stamps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["train_structure", "structure_targets", "transform_structure", "to_columns",
           "blurred_beta", "model_inputs", "size_weights"]

VERSION = "1"

#: arch keys a warm start may add to the saved network (:func:`train_structure`)
WIDENABLE: tuple[str, ...] = ("psf_beta_input", "profile_radii", "psf_profile")

#: exponent of :func:`blurred_beta`: p(beta) = P0 + P1 ln(beta)
_BLUR_P0, _BLUR_P1 = 0.235, 0.728


def blurred_beta(beta: "Any", fwhm: "Any", blur_fwhm: "Any") -> "Any":
    """Moffat beta of a Moffat PSF convolved with a Gaussian (training augmentation).

    The training loop's :func:`~tilecat.morphology.fit.degrade` blurs some stamps with
    an extra Gaussian; their PSF is then Moffat (``beta``, ``fwhm``) * Gaussian
    (``blur_fwhm``), more Gaussian in the core, and a Moffat fitted to it (as to a tile's
    stars) has a larger beta. Approximation of that fit (least squares on the image of
    the convolved PSF, beta 1.5-4.5, blur up to 1.2 FWHM; within ~10 % in 1/beta)::

        1 / beta' = (1 / beta) * (fwhm^2 / (fwhm^2 + blur^2)) ** (0.235 + 0.728 ln beta)

    Parameters
    ----------
    beta, fwhm, blur_fwhm : tensors (broadcastable)
        Moffat beta; PSF FWHM and the Gaussian's FWHM in the same unit.
    """
    import torch

    f2 = fwhm**2
    share = f2 / (f2 + blur_fwhm**2).clamp(min=1e-12)
    p = _BLUR_P0 + _BLUR_P1 * torch.log(beta.clamp(min=1.0))
    return beta / share.clamp(min=1e-6) ** p


def model_inputs(model_arch: dict[str, Any], ss: "Any", where: str = "") -> list[np.ndarray]:
    """The per-object inputs of a structure model with ``model_arch`` from a stamp set:
    ``[]``, ``[psf_fwhm]`` or ``[psf_fwhm, psf_beta]`` (float32 ``(N, n_band)``).

    Raises
    ------
    InputError
        The set lacks a variable the model needs (``where``: the set's path).
    """
    from ..errors import InputError

    out: list[np.ndarray] = []
    if model_arch.get("psf_input"):
        if ss.psf_fwhm is None:
            raise InputError("-", where, "stamp set has no psf_fwhm(object, band)")
        out.append(np.asarray(ss.psf_fwhm, np.float32))
        if model_arch.get("psf_beta_input"):
            if ss.psf_beta is None:
                raise InputError("-", where, "stamp set has no psf_beta(object, band) (a set "
                                 "simulated before the PSF's Moffat beta was recorded)")
            out.append(np.asarray(ss.psf_beta, np.float32))
    return out


def size_weights(ln_r50: np.ndarray, power: float = 0.5, max_weight: float = 4.0,
                 bins: int = 24) -> np.ndarray:
    """Per-galaxy weights of the r50 loss term that flatten the training set's size prior.

    A network trained with a Gaussian NLL predicts the posterior mean of ln r50, which is
    pulled toward the bulk of the training sizes wherever the image constrains the size
    poorly (large galaxies whose wings fall off the stamp or into the noise): they are
    systematically shrunk. Weighting each galaxy by ``p(ln r50) ** -power`` (``p`` a
    histogram density of the training set's ln r50 over ``bins`` equal bins between its
    0.5 and 99.5 percentiles, sizes outside take the edge bins) flattens that prior
    (``power = 1``: flat). Weights are clipped to ``max_weight`` times their median and
    normalised to mean 1.

    Parameters
    ----------
    ln_r50 : ndarray, shape (N,)
        ln r50 (any unit; NaN gets weight 1).
    power, max_weight : float
    bins : int

    Returns
    -------
    ndarray of float32, shape (N,)
    """
    x = np.asarray(ln_r50, float)
    ok = np.isfinite(x)
    w = np.ones(len(x))
    if ok.sum() < 2 or power == 0:
        return w.astype(np.float32)
    lo, hi = np.percentile(x[ok], [0.5, 99.5])
    edges = np.linspace(lo, hi, bins + 1)
    idx = np.clip(np.searchsorted(edges, x[ok], side="right") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(float)
    w[ok] = np.maximum(counts[idx], 1.0) ** -float(power)
    w[ok] = np.minimum(w[ok], max_weight * np.median(w[ok]))
    w[ok] /= w[ok].mean()
    return w.astype(np.float32)


def structure_targets(labels: dict[str, np.ndarray], pixel_scale: float) -> np.ndarray:
    """Truth -> regression targets ``(N, 4)`` float32: ln(r50/pixel), ln n, e1, e2.

    Non-positive or missing r50 / n give NaN (ignored by the loss).
    """
    n = len(labels["r50"])
    r50 = np.asarray(labels["r50"], float)
    sn = np.asarray(labels.get("sersic_n", np.full(n, np.nan)), float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack([
            np.where(r50 > 0, np.log(r50 / pixel_scale), np.nan),
            np.where(sn > 0, np.log(sn), np.nan),
            np.asarray(labels.get("e1", np.full(n, np.nan)), float),
            np.asarray(labels.get("e2", np.full(n, np.nan)), float),
        ], axis=1)
    return out.astype(np.float32)


def transform_structure(targets: "Any", k: int) -> "Any":
    """Targets after D4 element ``k`` (:func:`tilecat.morphology.fit.d4`).

    A quarter turn negates e1 and e2 (the position angle turns by 90 deg); a
    left-right mirror negates e2. Sizes and Sersic index are invariant.
    """
    out = targets.clone()
    s = -1.0 if (k % 4) % 2 else 1.0
    out[:, 2] = targets[:, 2] * s
    out[:, 3] = targets[:, 3] * s * (-1.0 if k >= 4 else 1.0)
    return out


def to_columns(raw: np.ndarray, pixel_scale: float) -> dict[str, np.ndarray]:
    """Inference output ``(N, 8)`` (mu, sigma) -> r50 [arcsec], n, e1, e2 and errors."""
    from .head import HEAD, COLUMNS
    from ..infer.heads import LoadedHead

    lh = LoadedHead(module=None, card={}, columns=COLUMNS,  # type: ignore[arg-type]
                    extra={"pixel_scale": pixel_scale})
    cols = HEAD.postprocess(raw, lh)
    return {k.removeprefix("struct_"): v for k, v in cols.items()}


def train_structure(
    train: str | Path | list[str | Path],
    out_dir: str | Path,
    *,
    heldout: str | Path | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    threads: int = 1,
    val_fraction: float = 0.1,
    limit: int | None = None,
    arch: dict[str, Any] | None = None,
    recipe: str | None = None,
    degrade_prob: float = 0.0,
    init: str | Path | None = None,
    size_weighting: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the structure network and write ``weights.safetensors`` + ``card.json``.

    Parameters are those of :func:`tilecat.morphology.train.train_morphology`.
    Only galaxies (``t_class`` != artifact, finite truth) are used. By default the
    network also takes the PSF FWHM of each band (``arch['psf_input']``; the stamp
    set's ``psf_fwhm``, at inference the tile's), so its sizes are PSF-corrected.
    With ``arch['psf_beta_input']`` it takes the PSF's Moffat beta per band too (the
    set's ``psf_beta``; degraded stamps get :func:`blurred_beta`). Starting from
    ``init``, the saved model's arch is kept; ``arch`` may only add
    ``psf_beta_input: true``, ``profile_radii`` (the curve-of-growth features of
    :func:`~tilecat.structure.model.profile_feature`) and ``psf_profile: true`` (the
    PSF's, :func:`~tilecat.structure.model.psf_profile_feature`), whose new first-layer
    weights start at zero (the network starts as the saved one), and may set ``tta`` (the inference
    module's test-time average, ``mirror`` or ``d4``: :class:`MirrorAveraged`). ``size_weighting`` (``{"power": .., "max_weight":
    .., "bins": ..}``, default none: unweighted) weights each galaxy's ln r50 loss term
    by :func:`size_weights` of the training set (validation loss weighted alike).

    Returns
    -------
    dict
        The model card as written.
    """
    import torch

    from ..models import save_model
    from ..morphology.dataset import load_stamp_sets, load_stamps
    from ..morphology.fit import FitConfig, fit
    from ..morphology.metrics import structure_metrics
    from ..morphology.net import DEFAULT_ARCH
    from ..morphology.train import _provenance, card_input, split
    from .model import (TARGETS, TTA_MODES, MirrorAveraged, StructureNet, gaussian_nll,
                        predict_structure)

    torch.set_num_threads(threads)
    data = load_stamp_sets(train, limit=limit)
    targets = structure_targets(data.labels, data.pixel_scale)
    keep = np.isfinite(targets[:, 0])
    if "t_class" in data.labels:
        keep &= np.asarray(data.labels["t_class"]) != "artifact"
    data, targets = data.subset(np.flatnonzero(keep)), targets[keep]
    tr, va = split(len(data), val_fraction, seed)
    log(f"training set {train}: {len(data)} galaxies ({len(tr)} train, {len(va)} validation)")
    asked = dict(arch or {})
    arch = {**DEFAULT_ARCH, "psf_input": True, **asked}
    torch.manual_seed(seed)
    # a warm start replaces this network, but its random init stays: it fixes the torch
    # random stream every shipped stage was trained with (the inputs a warm start adds,
    # such as psf_profile, need not be complete in ``arch`` alone)
    net = StructureNet(len(data.bands), arch if init is None else {**arch, "psf_profile": False})
    init_training = None
    if init is not None:  # warm start from a saved model (same architecture)
        from ..errors import ConfigError
        from ..models import load_model
        from .model import build, widen_inputs

        start, start_card = load_model(init, build)
        arch = dict(start_card.get("arch") or arch)
        init_training = start_card.get("training")
        net = start.net
        # inputs a warm start may add (widen_inputs), in the order their features go
        added: dict[str, Any] = {k: asked[k] for k in WIDENABLE
                                 if asked.get(k) and not arch.get(k)}
        if "profile_radii" in added:
            added["profile_radii"] = [float(r) for r in added["profile_radii"]]
        if added:
            arch.update(added)
            net = widen_inputs(net, arch)
            log(f"added the inputs {sorted(added)} to {init} (zero weights)")
        if "tta" in asked:  # inference only: the test-time average may change
            arch["tta"] = str(asked["tta"])
        changed = sorted(k for k, v in asked.items() if k not in added and arch.get(k) != v)
        if changed:
            raise ConfigError(f"train_structure: starting from {init}, arch keys {changed} "
                              "differ from the saved model's (only psf_beta_input, "
                              "profile_radii and psf_profile may be added, tta changed)")
    if str(arch.get("tta", "mirror")) not in TTA_MODES:
        from ..errors import ConfigError

        raise ConfigError(f"train_structure: arch tta {arch['tta']!r} is not one of "
                          f"{list(TTA_MODES)}")
    inputs = model_inputs(arch, data, str(train))

    k = targets.shape[1]
    if size_weighting:
        sw = size_weights(targets[:, 0], **size_weighting)
        log(f"r50 loss weights {size_weighting}: range {sw.min():.2f}-{sw.max():.2f}")
        targets = np.concatenate([targets, sw[:, None]], axis=1)

    def loss(out: "torch.Tensor", t: "torch.Tensor") -> "torch.Tensor":
        if t.shape[1] == k:
            return gaussian_nll(out, t).sum()
        return gaussian_nll(out, t[:, :k], weight=t[:, k]).sum()

    cfg = FitConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, threads=threads,
                    degrade_prob=degrade_prob)
    aux = (inputs[0][tr], inputs[0][va]) if inputs else None
    extra = (inputs[1][tr], inputs[1][va]) if len(inputs) == 2 else None
    history = fit(net, data.stamps[tr], targets[tr], loss, transform_structure,
                  (data.stamps[va], targets[va]), cfg, log, aux=aux,
                  pixel_scale=data.pixel_scale, extra=extra,
                  extra_blur=blurred_beta if extra is not None else None)
    model = MirrorAveraged(net, data.pixel_scale, tta=str(arch.get("tta", "mirror"))).eval()

    if heldout is not None:
        ev = load_stamps(heldout)
        ok = np.isfinite(structure_targets(ev.labels, ev.pixel_scale)[:, 0])
        if "t_class" in ev.labels:
            ok &= np.asarray(ev.labels["t_class"]) != "artifact"
        ev = ev.subset(np.flatnonzero(ok))
        ev_name = "heldout"
    else:
        ev, ev_name = data.subset(va), "validation"
    ev_in = model_inputs(arch, ev, str(heldout) if heldout is not None else "validation")
    pred = to_columns(predict_structure(model, ev.stamps, ev_in), ev.pixel_scale)
    truth = {k: np.asarray(ev.labels[k], float) for k in ("r50", "sersic_n", "e1", "e2")}
    snr = np.asarray(ev.labels["snr"], float) if "snr" in ev.labels else None
    metrics = structure_metrics(pred, truth, snr)
    log(f"{ev_name}: r50 median relative error {metrics['r50_median_rel_err']:.3f}, "
        f"within 1 sigma {metrics['r50_within_1sigma']:.3f}")
    card = {
        "name": "structure",
        "version": VERSION,
        "task": "galaxy structure: half-light radius, Sersic index, ellipticity",
        "architecture": "StructureNet (conv trunk + MLP, Gaussian NLL) wrapped in "
                        "MirrorAveraged (mirror test-time average, e2 sign flipped)",
        "arch": arch,
        "input": card_input(data),
        "targets": list(TARGETS),
        "extra_inputs": (["psf_fwhm (arcsec, per band)"] if arch["psf_input"] else [])
        + (["psf_beta (Moffat beta, per band)"] if arch.get("psf_beta_input") else []),
        "outputs": "mu and sigma of (ln r50 [pixels], ln n, e1, e2); columns struct_*",
        "training": {
            "data": _provenance(data, train),
            "recipe": recipe,
            "init_from": init_training,
            "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            **({"threads": threads} if threads != 1 else {}),
            "optimizer": "AdamW, one-cycle lr, weight decay 1e-4",
            "degrade": {"prob": cfg.degrade_prob, "max_blur_pix": cfg.degrade_max_blur,
                        "min_flux_scale": cfg.degrade_min_scale,
                        "what": "extra Gaussian PSF blur + shallower depth, noise restored"},
            "augmentation": "dihedral D4 (quarter turn negates e1, e2; mirror negates e2)"
            + ("; degraded stamps' beta input: blurred_beta" if arch.get("psf_beta_input")
               else ""),
            "loss": "heteroscedastic Gaussian negative log-likelihood"
            + (f"; ln r50 term weighted by size_weights({size_weighting})"
               if size_weighting else ""),
            "val_fraction": val_fraction, "history": history,
        },
        "evaluation": {
            "set": ev_name,
            "data": _provenance(ev, heldout) if heldout is not None else None,
            "metrics": metrics,
        },
    }
    return save_model(model, card, out_dir)
