"""The training loop shared by the galaxy CNNs (morphology, structure).

Deterministic for a given seed and thread count: a seeded permutation per epoch, one
seeded dihedral (D4) transform per batch, AdamW with a one-cycle learning rate, and
the weights of the epoch with the best validation loss are kept.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["FitConfig", "d4", "degrade", "degrade_with_blur", "fit", "predict",
           "evaluate_loss"]

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

#: ``f(extra, psf_fwhm_pix, blur_fwhm_pix) -> extra'``, tensors ``(B, n_band)``: a further
#: per-object input of a stamp degraded by an extra Gaussian blur (:func:`fit`)
BlurInput = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitConfig:
    """Training hyperparameters (recorded in the model card)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    log_every: int = 50
    #: observing-condition augmentation (:func:`degrade`): probability per stamp,
    #: largest extra Gaussian blur sigma [pixels], smallest flux scale (S/N factor)
    degrade_prob: float = 0.0
    degrade_max_blur: float = 2.0
    degrade_min_scale: float = 0.45
    extra: dict[str, Any] = field(default_factory=dict)


def d4(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0..7) of the dihedral group on stamps ``(N, C, H, W)``.

    ``k % 4`` quarter turns, then a left-right mirror when ``k >= 4``.
    """
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def degrade_with_blur(x: torch.Tensor, gen: torch.Generator, prob: float, max_blur: float,
                      min_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`degrade`, also returning the extra blur sigma of each stamp ``(B,)`` [pixels]."""
    b = x.shape[0]
    pick = torch.rand(b, generator=gen) < prob
    blur = torch.zeros(b, dtype=x.dtype)
    if not bool(pick.any()):
        return x, blur
    idx = torch.nonzero(pick).flatten()
    s = torch.rand(len(idx), generator=gen) * max_blur
    a = min_scale + (1 - min_scale) * torch.rand(len(idx), generator=gen)
    out = x.clone()
    out[idx] = _degrade_some(x[idx].contiguous(), s, a, max_blur, gen)
    blur[idx] = s.to(x.dtype)
    return out, blur


def _degrade_some(x: torch.Tensor, s: torch.Tensor, a: torch.Tensor, max_blur: float,
                  gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    half = max(1, int(np.ceil(3 * max_blur)))
    r = torch.arange(-half, half + 1, dtype=x.dtype)
    g1 = torch.exp(-0.5 * (r[None] / s.clamp(min=1e-3)[:, None]) ** 2)
    g1 = g1 / g1.sum(1, keepdim=True)  # s -> 0 gives a delta
    k = g1[:, :, None] * g1[:, None, :]  # (n, K, K)
    ksum2 = (k**2).sum((1, 2))
    y = torch.sinh(x).reshape(1, n * c, h, w)
    weight = k.repeat_interleave(c, dim=0)[:, None]  # (n*c, 1, K, K)
    y = torch.nn.functional.conv2d(y, weight, padding=half, groups=n * c).reshape(n, c, h, w)
    noise_sd = torch.sqrt((1 - a**2 * ksum2).clamp(min=0))
    y = a[:, None, None, None] * y + noise_sd[:, None, None, None] * torch.randn(
        y.shape, generator=gen, dtype=y.dtype)
    return torch.asinh(y)


def degrade(x: torch.Tensor, gen: torch.Generator, prob: float, max_blur: float,
            min_scale: float) -> torch.Tensor:
    """Simulate worse observing conditions on arcsinh(F/sigma) stamps (training augmentation).

    For a random subset (probability ``prob``) of the stamps ``(B, C, H, W)``: back to
    linear units ``y = sinh(x)`` (flux over background noise), convolve with a Gaussian
    of random width ``s`` in [0, ``max_blur``] pixels (a broader PSF, the same for all
    bands of a stamp), scale by a random ``a`` in [``min_scale``, 1] (a shallower
    image) and add white noise so the per-pixel noise is 1 again:
    ``y' = a (y * k) + sqrt(1 - a^2 sum(k^2)) n``; return ``arcsinh(y')``.
    Labels are unchanged: the truth describes the intrinsic galaxy.
    """
    return degrade_with_blur(x, gen, prob, max_blur, min_scale)[0]


Aux = np.ndarray | Sequence[np.ndarray] | None


def _aux_arrays(aux: Aux) -> tuple[np.ndarray, ...]:
    """``aux`` as a tuple of per-object arrays (one array, a sequence of them, or none)."""
    if aux is None:
        return ()
    return (aux,) if isinstance(aux, np.ndarray) else tuple(aux)


def _aux_batch(arrays: tuple[np.ndarray, ...], sl: slice) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a[sl], np.float32)) for a in arrays]


def predict(module: torch.nn.Module, stamps: np.ndarray, batch_size: int = 256,
            aux: Aux = None) -> np.ndarray:
    """Run ``module`` (eval, inference mode) over ``stamps`` (N, C, H, W) -> float32 array.

    ``aux``: one per-object array (N, ...) or a sequence of them, passed after the
    stamps as the module's further arguments, in order.
    """
    module.eval()
    arrays = _aux_arrays(aux)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(stamps), batch_size):
            sl = slice(i, i + batch_size)
            x = torch.from_numpy(np.ascontiguousarray(stamps[sl])).contiguous(
                memory_format=torch.channels_last)
            outs.append(module(x, *_aux_batch(arrays, sl)).float().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def fit(
    model: torch.nn.Module,
    stamps: np.ndarray,
    targets: np.ndarray,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    transform_targets: Callable[[torch.Tensor, int], torch.Tensor],
    val: tuple[np.ndarray, np.ndarray],
    cfg: FitConfig,
    log: Callable[[str], None] = print,
    aux: tuple[np.ndarray, np.ndarray] | None = None,
    pixel_scale: float = 1.0,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    extra_blur: BlurInput | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place; keep the best-validation weights.

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch ``(B, C, H, W)`` to outputs consumed by ``loss_fn``.
    stamps : ndarray of float32, shape (N, C, H, W)
    targets : ndarray, shape (N, ...)
        Per-object targets (ints for classification, floats for regression).
    loss_fn : callable
        ``loss_fn(outputs, targets) -> scalar tensor``.
    transform_targets : callable
        ``transform_targets(targets, k)``: the targets of the stamps after
        :func:`d4` element ``k`` (e.g. S <-> Z under a mirror).
    val : (stamps, targets)
        Validation set (no augmentation).
    cfg : FitConfig
    log : callable
        Progress lines.
    aux : (train, validation) PSF FWHM arrays, optional
        Per-object PSF FWHM per band [arcsec], ``(N, n_band)``, passed to the model
        as ``model(x, psf_pix)`` in pixels; degraded stamps get their FWHM widened
        in quadrature by the extra blur.
    pixel_scale : float
        arcsec / pixel (to convert ``aux`` and the blur).
    extra : (train, validation) arrays, optional
        A further per-object input ``(N, n_band)`` (e.g. the PSF's Moffat beta),
        passed as ``model(x, psf_pix, extra)``; needs ``aux``.
    extra_blur : callable, optional
        ``extra_blur(extra, psf_pix, blur_fwhm_pix) -> extra'``: the input of a degraded
        stamp (``psf_pix`` its PSF FWHM before the extra Gaussian blur of FWHM
        ``blur_fwhm_pix``, both in pixels); ``extra`` is passed unchanged without it.

    Returns
    -------
    list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``seconds``.
    """
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(stamps)
    steps_per_epoch = max(1, n // cfg.batch_size)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15)
    tgt_all = torch.from_numpy(np.ascontiguousarray(targets))
    history: list[dict[str, float]] = []
    best, best_state = float("inf"), copy.deepcopy(model.state_dict())
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        perm = rng.permutation(n)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = np.sort(perm[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            k = int(rng.integers(8))
            x = d4(torch.from_numpy(stamps[idx]), k)
            blur = torch.zeros(len(idx))
            if cfg.degrade_prob > 0:
                x, blur = degrade_with_blur(x, gen, cfg.degrade_prob, cfg.degrade_max_blur,
                                            cfg.degrade_min_scale)
            x = x.contiguous(memory_format=torch.channels_last)
            t = transform_targets(tgt_all[idx], k)
            inputs: tuple[torch.Tensor, ...] = ()
            if aux is not None:
                fwhm = torch.from_numpy(np.asarray(aux[0][idx], np.float32)) / pixel_scale
                blur_fwhm = FWHM_PER_SIGMA * blur[:, None]
                inputs = (torch.sqrt(fwhm**2 + blur_fwhm**2),)
                if extra is not None:
                    e = torch.from_numpy(np.asarray(extra[0][idx], np.float32))
                    inputs += (e if extra_blur is None else extra_blur(e, fwhm, blur_fwhm),)
            loss = loss_fn(model(x, *inputs), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                log(f"epoch {epoch + 1} step {step + 1}/{steps_per_epoch} "
                    f"loss {total / (step + 1):.4f} ({time.perf_counter() - t0:.0f} s)")
        val_aux = () if aux is None else (aux[1] / pixel_scale,) + (
            () if extra is None else (extra[1],))
        val_loss = evaluate_loss(model, val[0], val[1], loss_fn, aux=val_aux)
        rec = {"epoch": epoch + 1, "train_loss": total / steps_per_epoch, "val_loss": val_loss,
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        log(f"epoch {epoch + 1}: train {rec['train_loss']:.4f} val {val_loss:.4f} "
            f"({rec['seconds']:.0f} s)")
        if val_loss < best:
            best, best_state = val_loss, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return history


def evaluate_loss(model: torch.nn.Module, stamps: np.ndarray, targets: np.ndarray,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  batch_size: int = 256, aux: Aux = None) -> float:
    """Mean loss over a set (eval mode, no augmentation), weighted by batch size.

    ``aux``: per-object array(s) passed after the stamps, as in :func:`predict`.
    """
    model.eval()
    arrays = _aux_arrays(aux)
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(stamps), batch_size):
            sl = slice(i, i + batch_size)
            x = torch.from_numpy(np.ascontiguousarray(stamps[sl])).contiguous(
                memory_format=torch.channels_last)
            t = torch.from_numpy(np.ascontiguousarray(targets[sl]))
            total += float(loss_fn(model(x, *_aux_batch(arrays, sl)), t)) * len(x)
            count += len(x)
    return total / max(count, 1)
