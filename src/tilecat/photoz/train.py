"""Train the photo-z CNN on simulated galaxy stamps: ``train_photoz``.

Recipe: cross-entropy of the softmax over the redshift bins against *two-hot*
targets (each true z split linearly between its two nearest bin centres, so the
target's mean is z exactly), AdamW with a one-cycle learning rate, augmentations
(worse observing conditions, sky-subtraction errors, masked pixels and image edges as
in the pipeline's cutouts, then D4 about the centre pixel: photometry is invariant),
the weights of the epoch with the best validation loss kept, then a softmax
temperature fitted on the validation set (minimum NLL; the validation stamps get the
same augmentations, drawn once, when ``temperature_on="augmented"``) to calibrate
the PDFs. The training-set N(z) on the bin grid is stored
in the card as the prior ``P_T`` (for prior correction at the aggregate step).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .grid import ZGrid

__all__ = ["train_photoz", "predict_pdf", "fit_temperature", "evaluate", "VERSION",
           "DEFAULT_DEGRADE"]

VERSION = "1"

#: default observing-condition augmentation (:func:`tilecat.photoz.augment.degrade`)
DEFAULT_DEGRADE: dict[str, Any] = {"prob": 0.6, "max_noise_factor": 2.5, "max_blur_fwhm": 9.0,
                                   "kernel": "moffat"}


def _psf_arg(psf: np.ndarray | None, i: int, batch_size: int) -> Any:
    import torch

    if psf is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(psf[i:i + batch_size], np.float32))


def predict_pdf(module: Any, stamps: np.ndarray, sigma: np.ndarray,
                psf_fwhm: np.ndarray | None = None, batch_size: int = 256) -> np.ndarray:
    """Run a :class:`~tilecat.photoz.model.PhotoZModule` (eval) -> PDFs (N, K) float32.

    ``sigma`` (N, B) nanomaggies; ``psf_fwhm`` (N, B) arcsec for models that use it.
    """
    import torch

    module.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(stamps), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(stamps[i:i + batch_size])).contiguous(
                memory_format=torch.channels_last)
            s = torch.from_numpy(np.ascontiguousarray(sigma[i:i + batch_size], np.float32))
            out.append(module(x, s, _psf_arg(psf_fwhm, i, batch_size)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _logits(net: Any, stamps: np.ndarray, sigma: np.ndarray, psf: np.ndarray | None,
            batch_size: int = 256) -> np.ndarray:
    import torch

    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(stamps), batch_size):
            x = torch.from_numpy(stamps[i:i + batch_size]).contiguous(
                memory_format=torch.channels_last)
            s = torch.from_numpy(np.ascontiguousarray(sigma[i:i + batch_size]))
            out.append(net(x, s, _psf_arg(psf, i, batch_size)).double().numpy())
    return np.concatenate(out)


def _soft_ce(logits: np.ndarray, targets: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(targets * logp).sum(axis=1).mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray,
                    grid: Sequence[float] = tuple(np.round(np.arange(0.5, 3.01, 0.02), 2))
                    ) -> float:
    """Softmax temperature minimising the cross-entropy on a validation set.

    Parameters
    ----------
    logits : ndarray (N, K)
    targets : ndarray (N, K)
        Two-hot targets (:meth:`ZGrid.two_hot`).
    grid : sequence of float
        Temperatures tried.
    """
    losses = [_soft_ce(logits, targets, float(t)) for t in grid]
    return float(grid[int(np.argmin(losses))])


def evaluate(pdf: np.ndarray, grid: ZGrid, z_true: np.ndarray, mag_r: np.ndarray | None = None,
             point: str = "z_median") -> dict[str, Any]:
    """Point + PDF metrics of a set of PDFs (point estimate ``point``), by r magnitude too."""
    from .metrics import metrics_by_bin, pdf_metrics, point_metrics
    from .summary import pdf_summary

    s = pdf_summary(pdf, grid)
    out: dict[str, Any] = {"point_estimate": point, **point_metrics(s[point], z_true),
                           **pdf_metrics(pdf, grid, z_true)}
    out["sigma_nmad_by_estimate"] = {k: point_metrics(s[k], z_true)["sigma_nmad"]
                                     for k in ("z_mean", "z_median", "z_mode")}
    if mag_r is not None:
        out["by_mag_r"] = metrics_by_bin(s[point], z_true, mag_r,
                                         [10, 18, 20, 21, 22, 23, 24, 26])
        bright = np.asarray(mag_r) < 20
        out["bright_r_lt_20"] = point_metrics(s[point][bright], np.asarray(z_true)[bright])
    return out


def _provenance(attrs: dict[str, Any], paths: Any, n: int) -> dict[str, Any]:
    keep = {k: attrs[k] for k in ("seed", "heldout", "recipe", "simver", "parts") if k in attrs}
    names = ([Path(p).name for p in paths] if isinstance(paths, (list, tuple))
             else Path(paths).name)
    return {"path": names, "n_galaxies": int(n), **keep}


def _augment(x: Any, sig: Any, p: Any, gen: Any, degrade: dict[str, Any],
             sky: dict[str, float], mask: dict[str, float], pixel_scale: float) -> Any:
    """The training augmentations in pipeline order: conditions, sky error, masks."""
    from .augment import degrade as degrade_fn
    from .augment import mask_regions, sky_offset

    x, sig, p = degrade_fn(x, sig, gen, **degrade, psf_fwhm=p, pixel_scale=pixel_scale)
    x = sky_offset(x, gen, **sky)
    x = mask_regions(x, gen, **mask)
    return x, sig, p


def train_photoz(
    train: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    heldout: str | Path | Sequence[str | Path] | None = None,
    grid: ZGrid | None = None,
    epochs: int = 12,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    threads: int = 1,
    val_fraction: float = 0.1,
    limit: int | None = None,
    arch: dict[str, Any] | None = None,
    degrade: dict[str, Any] | None = None,
    sky: dict[str, float] | None = None,
    mask: dict[str, float] | None = None,
    temperature_on: str = "clean",
    recipe: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the photo-z network and write ``weights.safetensors`` + ``card.json``.

    Parameters
    ----------
    train : path or list of paths
        Galaxy stamp stores (``tilecat simulate-stamps --kind galaxy``), e.g. one
        ``empirical`` and one ``parametric`` population set.
    out_dir : path
        Model directory to write.
    heldout : path or list of paths, optional
        Held-out stores scored into the card's ``evaluation`` (else the validation split).
    grid : ZGrid, optional
        Redshift bins (default 0-1.5, 60 bins).
    epochs, batch_size, lr, weight_decay, seed : training hyperparameters
    threads : int
        torch CPU threads.
    val_fraction : float
        Fraction of the training objects held back for validation / temperature.
    limit : int, optional
        Objects read per store (quick runs).
    arch : dict, optional
        Overrides of :data:`tilecat.photoz.model.DEFAULT_ARCH`.
    degrade : dict, optional
        Arguments of :func:`tilecat.photoz.augment.degrade` (default
        :data:`DEFAULT_DEGRADE`; ``{"prob": 0}`` turns it off). The Moffat kernel needs
        the PSF input (``arch["use_psf"]``); without it Gaussians are used.
    sky : dict, optional
        Arguments of :func:`tilecat.photoz.augment.sky_offset` (default
        :data:`tilecat.photoz.augment.DEFAULT_SKY`; ``{"prob": 0}`` turns it off).
    mask : dict, optional
        Arguments of :func:`tilecat.photoz.augment.mask_regions` (default
        :data:`tilecat.photoz.augment.DEFAULT_MASK`).
    temperature_on : {"clean", "augmented"}
        Fit the softmax temperature on the validation stamps as simulated, or on the
        validation stamps through the training augmentations (drawn once, seeded).
    recipe : str, optional
        How the training data were made (command lines), recorded in the card.
    log : callable
        Progress lines.

    Returns
    -------
    dict
        The model card as written.
    """
    import torch

    from ..models import save_model
    from .augment import DEFAULT_MASK, DEFAULT_SKY, d4_centred
    from .data import load_photoz_sets
    from .model import DEFAULT_ARCH, PhotoZModule, PhotoZNet

    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    grid = grid or ZGrid()
    data = load_photoz_sets(train, limit)
    n = len(data)
    perm = np.random.default_rng([seed, 7]).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    va, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    log(f"photo-z training set: {n} galaxies ({len(tr)} train, {len(va)} validation)")
    arch = {**DEFAULT_ARCH, **(arch or {})}
    degrade = {**DEFAULT_DEGRADE, **(degrade or {})}
    sky = {**DEFAULT_SKY, **(sky or {})}
    mask = {**DEFAULT_MASK, **(mask or {})}
    if temperature_on not in ("clean", "augmented"):
        raise ValueError(f"temperature_on must be 'clean' or 'augmented', not {temperature_on!r}")
    gen = torch.Generator().manual_seed(int(seed))
    bands = list(data.bands)
    ref = bands.index("r") if "r" in bands else len(bands) // 2
    if arch["use_psf"] and data.psf_fwhm is None:
        from ..errors import InputError

        raise InputError("-", str(train), "the stamp sets have no psf_fwhm(object, band); "
                                          "train with arch={'use_psf': False}")
    psf = data.psf_fwhm if arch["use_psf"] else None
    if psf is None and degrade.get("kernel") == "moffat":
        log("no PSF input: the observing-condition augmentation blurs with Gaussians")
        degrade["kernel"] = "gaussian"
    net = PhotoZNet(len(bands), data.stamps.shape[-1], grid.n_bins, arch, ref)
    # standardise the photometric features with the training set's statistics
    with torch.inference_mode():
        feats = torch.cat([net.photo.raw(torch.from_numpy(data.stamps[tr[i:i + 512]]),
                                         torch.from_numpy(data.sigma[tr[i:i + 512]]),
                                         None if psf is None
                                         else torch.from_numpy(psf[tr[i:i + 512]]))
                           for i in range(0, len(tr), 512)])
    net.photo.mean.copy_(feats.mean(0))
    net.photo.std.copy_(feats.std(0).clamp_min(1e-3))
    net.photo.mean[net.photo.mask_slice] = 0.0  # masked fractions: as they are
    net.photo.std[net.photo.mask_slice] = 1.0
    targets = grid.two_hot(data.z).astype(np.float32)
    net = net.to(memory_format=torch.channels_last)
    steps = max(1, len(tr) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps,
                                                pct_start=0.15)
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    best, best_state = float("inf"), copy.deepcopy(net.state_dict())
    t0 = time.perf_counter()
    tgt_va = targets[va]
    for epoch in range(epochs):
        net.train()
        order = tr[rng.permutation(len(tr))]
        total = 0.0
        for step in range(steps):
            idx = np.sort(order[step * batch_size:(step + 1) * batch_size])
            x, sig, p = _augment(torch.from_numpy(data.stamps[idx]),
                                 torch.from_numpy(data.sigma[idx]),
                                 None if psf is None else torch.from_numpy(psf[idx]), gen,
                                 degrade, sky, mask, float(data.pixel_scale))
            x = d4_centred(x, int(rng.integers(8))).contiguous(memory_format=torch.channels_last)
            logp = torch.log_softmax(net(x, sig, p), dim=1)
            loss = -(torch.from_numpy(targets[idx]) * logp).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        val = _soft_ce(_logits(net, data.stamps[va], data.sigma[va],
                               None if psf is None else psf[va]), tgt_va, 1.0)
        rec = {"epoch": epoch + 1, "train_loss": round(total / steps, 5),
               "val_loss": round(val, 5), "seconds": round(time.perf_counter() - t0, 1)}
        history.append(rec)
        log(f"epoch {epoch + 1}/{epochs}: train {rec['train_loss']:.4f} val {val:.4f} "
            f"({rec['seconds']:.0f} s)")
        if val < best:
            best, best_state = val, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    t_stamps, t_sigma, t_psf = data.stamps[va], data.sigma[va], None if psf is None else psf[va]
    if temperature_on == "augmented":
        g_t = torch.Generator().manual_seed(int(seed) + 1)
        with torch.inference_mode():
            xt, st, pt = _augment(torch.from_numpy(t_stamps), torch.from_numpy(t_sigma),
                                  None if t_psf is None else torch.from_numpy(t_psf), g_t,
                                  degrade, sky, mask, float(data.pixel_scale))
        t_stamps, t_sigma = xt.numpy(), st.numpy()
        t_psf = None if pt is None else pt.numpy()
    temperature = fit_temperature(_logits(net, t_stamps, t_sigma, t_psf), tgt_va)
    log(f"softmax temperature fitted on {temperature_on} validation: {temperature:.2f}")
    module = PhotoZModule(net, len(bands))
    module.temperature.fill_(temperature)
    module.eval()

    if heldout is not None:
        ev = load_photoz_sets(heldout)
        ev_name = "heldout"
    else:
        ev, ev_name = data.subset(va), "validation"
    pdf = predict_pdf(module, ev.stamps, ev.sigma, ev.psf_fwhm if arch["use_psf"] else None)
    metrics = evaluate(pdf, grid, ev.z, ev.mag("r"))
    if "population" in ev.labels:
        metrics["by_population"] = {
            str(p): evaluate(pdf[ev.labels["population"] == p], grid,
                             ev.z[ev.labels["population"] == p])
            for p in np.unique(ev.labels["population"])}
    log(f"{ev_name}: sigma_nmad {metrics['sigma_nmad']:.4f} bias {metrics['bias']:.4f} "
        f"outliers(0.15) {metrics['outlier_frac_015']:.4f} PIT KS {metrics['pit_ks']:.3f} "
        f"CRPS {metrics['crps']:.4f}")
    prior = grid.histogram(data.z[tr])
    card = {
        "name": "photoz",
        "version": VERSION,
        "task": "photometric redshift: binned PDF over a fixed redshift grid",
        "architecture": "PhotoZNet: conv trunk (tilecat.morphology.net.Trunk) features "
                        "concatenated with aperture asinh magnitudes, colours, ln noise, ln PSF "
                        "FWHM and masked aperture fractions (arch use_psf / use_mask) "
                        "computed from (stamps, sigma, psf_fwhm), MLP -> softmax over bins / "
                        "temperature",
        "reference": "Pasquet et al. 2019, A&A 621, A26",
        "arch": arch,
        "input": {
            "bands": bands,
            "stamp_size": int(data.stamps.shape[-1]),
            "pixel_scale": float(data.pixel_scale),
            "normalisation": "arcsinh(F / sigma_band), sigma_band = background noise per band",
            "extra_inputs": {"sigma": "per-object background noise per band (cutouts "
                                      "sigma(object, band)), converted to nanomaggies",
                             **({"psf_fwhm": "PSF FWHM per band [arcsec] (engine input)"}
                                if arch["use_psf"] else {})},
        },
        "z_grid": grid.to_meta(),
        "prior": {"kind": "training-set N(z): fraction of training galaxies per bin",
                  "p": [round(float(v), 8) for v in prior]},
        "temperature": temperature,
        "outputs": "z_pdf (bin probabilities), z_mean, z_median, z_mode, z_std, z_odds",
        "training": {
            "data": _provenance(data.attrs, train, n),
            "recipe": recipe,
            "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "weight_decay": weight_decay, "threads": threads,
            "optimizer": "AdamW, one-cycle lr (15% warm-up)",
            "loss": "cross-entropy against two-hot targets (linear split between the two "
                    "nearest bin centres)",
            "augmentation": "observing conditions (tilecat.photoz.augment.degrade "
                            f"{degrade}): extra blur (the PSF made a broader Moffat, or a "
                            "Gaussian added) and noise, per band; sky "
                            f"errors (tilecat.photoz.augment.sky_offset {sky}); masked "
                            f"pixels and image edges (tilecat.photoz.augment.mask_regions "
                            f"{mask}); dihedral D4 about the centre pixel",
            "val_fraction": val_fraction, "history": history,
            "calibration": f"softmax temperature minimising the cross-entropy on the "
                           f"{temperature_on} validation stamps",
            "temperature_on": temperature_on,
        },
        "evaluation": {
            "set": ev_name,
            "data": _provenance(ev.attrs, heldout, len(ev)) if heldout is not None else None,
            "metrics": metrics,
        },
    }
    from .metrics import json_safe

    return save_model(module, json_safe(card), out_dir)
