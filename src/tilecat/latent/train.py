"""Train the convolutional VAE on simulated galaxy stamps: ``train_vae``.

Recipe: negative ELBO (Gaussian likelihood with the per-pixel noise of
:mod:`tilecat.latent.noise`, in flux units, + KL to N(0, I), beta = 1 after an
optional linear KL warm-up), AdamW with a one-cycle learning rate, D4 augmentation,
the weights of the epoch with the best validation loss kept. Stars and artefacts are
left out, so that trails, cosmic rays and the like are anomalies. After training, the
training set's posterior means give the latent mean and covariance of the outlier
score (stored in the card), and the training distributions of the Mahalanobis distance and of the
reconstruction chi^2 give the standardisation of the combined outlier score
(:mod:`tilecat.latent.outlier`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["train_vae", "encode", "reconstruct", "load_galaxies", "VERSION"]

VERSION = "2"


def load_galaxies(paths: str | Path | Sequence[str | Path], limit: int | None = None) -> Any:
    """Galaxy stamp sets (:class:`tilecat.morphology.dataset.StampSet`) without artefacts/stars."""
    from ..morphology.dataset import load_stamp_sets

    data = load_stamp_sets(paths if isinstance(paths, (str, Path)) else list(paths), limit)
    keep = np.ones(len(data), bool)
    if "t_class" in data.labels:
        keep &= np.asarray(data.labels["t_class"]).astype(str) != "artifact"
    return data.subset(np.flatnonzero(keep))


def encode(module: Any, stamps: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Run a :class:`~tilecat.latent.model.LatentModule`: ``latent`` (N, D), ``recon_chi2`` (N,)
    and, if the module has a core radius, ``recon_chi2_core`` (N,)."""
    import torch

    module.eval()
    parts: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for i in range(0, len(stamps), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(stamps[i:i + batch_size])).contiguous(
                memory_format=torch.channels_last)
            out = module(x)
            for k, v in out.items():
                parts.setdefault(k, []).append(v.float().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def reconstruct(vae: Any, stamps: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Decoded posterior means, (N, B, S, S) float32."""
    import torch

    vae.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(stamps), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(stamps[i:i + batch_size]))
            mu, _ = vae.encode(x)
            out.append(vae.decode(mu).float().numpy())
    return np.concatenate(out)


def _val_loss(vae: Any, stamps: np.ndarray, eps: float, likelihood: str,
              batch_size: int = 256) -> float:
    import torch

    from .model import elbo_terms

    vae.eval()
    tot, n = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(stamps), batch_size):
            x = torch.from_numpy(stamps[i:i + batch_size])
            mu, logvar = vae.encode(x)
            nll, kl = elbo_terms(x, vae.decode(mu), mu, logvar, eps, likelihood)
            tot += float(nll + kl) * len(x)
            n += len(x)
    return tot / max(n, 1)


def train_vae(
    train: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    heldout: str | Path | Sequence[str | Path] | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-5,
    kl_warmup: float = 1.0,
    seed: int = 0,
    threads: int = 1,
    val_fraction: float = 0.05,
    limit: int | None = None,
    arch: dict[str, Any] | None = None,
    init: str | Path | None = None,
    recipe: str | None = None,
    time_limit: float | None = None,
    stop_after: int | None = None,
    loss: str | None = None,
    core_radius: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the VAE and write ``weights.safetensors`` + ``card.json``.

    Parameters
    ----------
    train : path or list of paths
        Galaxy stamp stores.
    out_dir : path
        Model directory.
    heldout : path or list, optional
        Held-out stores: SSIM and chi^2 in the card's ``evaluation``.
    epochs, batch_size, lr, weight_decay, seed : training hyperparameters
    kl_warmup : float
        Epochs over which the KL weight rises linearly from 0 to 1.
    threads : int
        torch CPU threads.
    val_fraction : float
        Validation fraction (best-epoch selection).
    limit : int, optional
        Objects read per store.
    arch : dict, optional
        Overrides of :data:`tilecat.latent.model.DEFAULT_ARCH`.
    init : path, optional
        Model directory to start from (weights checked against its card; its
        architecture is used, ``arch`` is ignored). Its training history is kept in
        the new card under ``training.init``.
    recipe : str, optional
        How the training data were made.
    time_limit : float, optional
        Seconds: no new epoch starts after this (the best epoch so far is kept). The
        card records the epochs run as ``training.stop_after``, so that a replay with
        ``stop_after`` gives the same weights.
    stop_after : int, optional
        Run only the first ``stop_after`` epochs of the ``epochs``-long learning-rate
        schedule (deterministic early stop).
    loss : str, optional
        Training loss (:data:`tilecat.latent.noise.LOSSES`); default: the
        architecture's ``likelihood``.
    core_radius : float, optional
        Radius (pixels) of the central disc whose chi^2 the outlier score uses
        (default :data:`tilecat.latent.model.CORE_RADIUS_PX`).
    log : callable

    Returns
    -------
    dict
        The card as written.
    """
    import torch

    from ..models import save_model
    from ..morphology.fit import d4
    from .model import (CORE_RADIUS_PX, DEFAULT_ARCH, ConvVAE, LatentModule, card_arch,
                        elbo_terms, kl_per_dim)
    from .outlier import fit_gaussian, fit_standardisation, gaussian_to_card
    from .ssim import ssim_stamps

    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    init_card: dict[str, Any] | None = None
    if init is not None:
        from ..models import load_model
        from .model import build

        init_module, init_card = load_model(init, build)
        arch = card_arch(init_card)
    arch = {**DEFAULT_ARCH, **(arch or {})}
    eps = float(arch["eps"])
    likelihood = str(arch["likelihood"])
    loss_name = likelihood if loss is None else str(loss)
    from .noise import LOSSES

    if loss_name not in LOSSES:
        raise ValueError(f"unknown loss {loss_name!r}; known: {LOSSES}")
    data = load_galaxies(train, limit)
    n = len(data)
    perm = np.random.default_rng([seed, 7]).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    va, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    log(f"VAE training set: {n} galaxies ({len(tr)} train, {len(va)} validation)")
    size = int(data.stamps.shape[-1])
    vae = ConvVAE(len(data.bands), size, arch)
    if init_card is not None:
        vae.load_state_dict(init_module.vae.state_dict())
        log(f"starting from {init} ({len(init_card['training']['history'])} epochs)")
    vae = vae.to(memory_format=torch.channels_last)
    steps = max(1, len(tr) // batch_size)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps,
                                                pct_start=0.15)
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    best, best_state = float("inf"), copy.deepcopy(vae.state_dict())
    t0 = time.perf_counter()
    for epoch in range(epochs):
        vae.train()
        order = tr[rng.permutation(len(tr))]
        t_nll = t_kl = 0.0
        for step in range(steps):
            idx = np.sort(order[step * batch_size:(step + 1) * batch_size])
            x = d4(torch.from_numpy(data.stamps[idx]), int(rng.integers(8)))
            x = x.contiguous(memory_format=torch.channels_last)
            recon, mu, logvar = vae(x)
            nll, kl = elbo_terms(x, recon, mu, logvar, eps, loss_name)
            beta = min(1.0, (epoch + step / steps) / kl_warmup) if kl_warmup > 0 else 1.0
            loss = (nll + beta * kl) / float(x[0].numel())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 5.0)
            opt.step()
            sched.step()
            t_nll += float(nll.detach())
            t_kl += float(kl.detach())
        val = _val_loss(vae, data.stamps[va], eps, loss_name)
        rec = {"epoch": epoch + 1, "train_nll": round(t_nll / steps, 2),
               "train_kl": round(t_kl / steps, 2), "val_loss": round(val, 2),
               "seconds": round(time.perf_counter() - t0, 1)}
        history.append(rec)
        log(f"epoch {epoch + 1}/{epochs}: nll {rec['train_nll']:.1f} kl {rec['train_kl']:.1f} "
            f"val -elbo {val:.1f} ({rec['seconds']:.0f} s)")
        if val < best and epoch + 1 >= kl_warmup:
            best, best_state = val, copy.deepcopy(vae.state_dict())
        if stop_after is not None and epoch + 1 >= stop_after:
            break
        if time_limit is not None and time.perf_counter() - t0 > time_limit and epoch + 1 < epochs:
            log(f"time limit {time_limit:.0f} s reached after epoch {epoch + 1}")
            break
    vae.load_state_dict(best_state)
    vae.eval()
    core = CORE_RADIUS_PX if core_radius is None else float(core_radius)
    module = LatentModule(vae, eps, likelihood, core).eval()
    enc = encode(module, data.stamps[tr])
    mean, cov = fit_gaussian(enc["latent"])
    from .outlier import combined_score, mahalanobis

    standard = fit_standardisation(mahalanobis(enc["latent"], mean, cov),
                                   enc["recon_chi2_core"], core)
    with torch.inference_mode():
        kl_dim = np.concatenate([
            kl_per_dim(*vae.encode(torch.from_numpy(data.stamps[va][i:i + 256]))).numpy()
            for i in range(0, len(va), 256)]).mean(axis=0)
    log(f"KL per latent (validation, nats): min {kl_dim.min():.2f}, median "
        f"{np.median(kl_dim):.2f}, max {kl_dim.max():.2f}; active (> 0.1 nat) "
        f"{int((kl_dim > 0.1).sum())}/{len(kl_dim)}")
    lat_std = np.sqrt(np.diag(cov))
    log(f"training latents: |mean| max {np.abs(mean).max():.3f}, std range "
        f"{lat_std.min():.3f}-{lat_std.max():.3f}")
    if heldout is not None:
        ev = load_galaxies(heldout)
        ev_name = "heldout"
    else:
        ev, ev_name = data.subset(va), "validation"
    ev_enc = encode(module, ev.stamps)
    ssim_vals = ssim_stamps(ev.stamps, reconstruct(vae, ev.stamps))

    metrics = {
        "n": len(ev),
        "ssim_vs_noisy_mean": float(ssim_vals.mean()),
        "ssim_vs_noisy_median": float(np.median(ssim_vals)),
        "ssim_note": "reconstruction vs the noisy input stamp (benchmarks/latent.py also "
                     "scores it against the noiseless stamp)",
        "recon_chi2_median": float(np.median(ev_enc["recon_chi2"])),
        "mahalanobis_median": float(np.median(mahalanobis(ev_enc["latent"], mean, cov))),
        "outlier_score_median": float(np.median(combined_score(
            mahalanobis(ev_enc["latent"], mean, cov), ev_enc["recon_chi2_core"], standard))),
    }
    log(f"{ev_name}: SSIM vs noisy {metrics['ssim_vs_noisy_mean']:.3f}, median chi2/pixel "
        f"{metrics['recon_chi2_median']:.3f}")
    card = {
        "name": "vae",
        "version": VERSION,
        "task": "galaxy stamp latent encoding (posterior means), outlier score, "
                "reconstruction chi^2",
        "architecture": "ConvVAE: strided conv encoder -> Gaussian posterior; linear + "
                        "(upsample, conv) decoder; inference returns posterior means",
        "reference": "Xu et al. 2023 (40-latent convolutional VAE of galaxy images)",
        "arch": arch,
        "input": {
            "bands": list(data.bands),
            "stamp_size": size,
            "pixel_scale": float(data.pixel_scale),
            "normalisation": "arcsinh(F / sigma_band), sigma_band = background noise per band",
        },
        "noise_model": (
            "flux s = sinh(x) Gaussian, m = sinh(recon): background noise + "
            f"{eps:.0%} fractional flux floor; training loss variance 1 + eps^2 max(s^2, m^2),"
            " recon_chi2 variance 1 + eps^2 m^2 (the data's given the reconstruction)"
            if likelihood == "flux" else
            "sigma_x^2 = (1 + eps^2 s^2) / (1 + s^2), s = sinh(x): background "
            f"noise + {eps:.0%} fractional flux floor") + " (tilecat.latent.noise)",
        "latent_distribution": {**gaussian_to_card(mean, cov),
                                "kind": "mean and covariance of the training posterior means"},
        "outlier_standardisation": {
            **standard,
            "kind": "median and robust sd (1.4826 MAD) of log Mahalanobis distance and of "
                    f"log recon_chi2_core (chi^2 per pixel within {core:g} pixels of the "
                    "stamp centre) over the training galaxies (tilecat.latent.outlier)"},
        "kl_per_latent_validation": [round(float(v), 3) for v in kl_dim],
        "outputs": "latent (posterior means), latent_outlier_score (-log10 of the Fisher-"
                   "combined tail probability of the standardised Mahalanobis distance and "
                   "recon_chi2_core), recon_chi2",
        "training": {
            "data": {"path": ([Path(p).name for p in train]
                              if isinstance(train, (list, tuple)) else Path(train).name),
                     "n_galaxies": n,
                     **{k: data.attrs[k] for k in ("seed", "heldout", "recipe", "simver",
                                                    "parts") if k in data.attrs}},
            "recipe": recipe,
            "seed": seed, "epochs": epochs,
            "stop_after": len(history) if len(history) < epochs else None,
            "batch_size": batch_size, "lr": lr,
            "weight_decay": weight_decay, "kl_warmup_epochs": kl_warmup, "threads": threads,
            "optimizer": "AdamW, one-cycle lr (15% warm-up), grad-norm clip 5",
            "loss": f"negative ELBO: Gaussian NLL ({loss_name!r} loss of "
                    "tilecat.latent.noise) + KL(N(mu, s^2) || N(0, I))",
            "loss_variant": loss_name,
            "augmentation": "dihedral D4",
            "val_fraction": val_fraction, "history": history,
            "init": None if init_card is None else {
                "sha256": init_card.get("sha256"), "training": init_card.get("training")},
        },
        "evaluation": {"set": ev_name, "metrics": metrics},
    }
    from ..photoz.metrics import json_safe

    return save_model(module, json_safe(card), out_dir)
