"""Training the defect masker on simulated defect patches (``tilecat train masker``).

Recipe (all recorded in the model card, reproducible from ``seed``):

- data: ``n_patches`` training patches simulated with ``seed``; a held-out set simulated
  with ``seed + 1000`` under the simulator's held-out observing conditions (other PSF
  and depth ranges), split in two halves: even patches choose the per-class
  thresholds on their ROC curves (false-positive rate on defect-free pixels outside a
  one-pixel guard band around true defects), odd patches give the metrics (both halves
  get the training share of coadd-like patches, see :mod:`tilecat.mask.augment`);
- input: :func:`tilecat.mask.prepare.prepare_band` (the single normalisation);
- loss: per-pixel, per-class binary cross-entropy with ``pos_weight_c =
  min(POS_WEIGHT_MAX, sqrt((1 - f_c) / f_c))`` (f_c the training pixel frequency), on
  top of the simulator's oversampling of patches with rare defects; random dihedral
  transforms (flips, 90° rotations) per batch;
- AdamW + one-cycle learning rate; BatchNorm; fixed seed, fixed thread count.

The network's outputs are then calibrated to the *effective* training prior
``P_T(c)``, the pixel frequency whose odds are multiplied by ``pos_weight_c``; the card
stores both ``train_pixel_freq`` and ``train_priors`` (= effective P_T(c)), the latter
being what the prior correction of :mod:`tilecat.mask.priors` divides out.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..bits import DEFECT_CLASSES

__all__ = ["train_masker", "POS_WEIGHT_MAX", "FPR_TARGET"]

#: Cap on the positive-class weight of the loss.
POS_WEIGHT_MAX = 10.0
#: Per-class false-positive rate at which thresholds are set (held-out split A): with
#: seven classes, at most ~1.4e-4 of the clean pixels get a network bit.
FPR_TARGET = 2e-5
#: Guard band (pixels) around true defects left out of the threshold negatives.
GUARD = 1
#: Fraction of training patches given coadd-like resampling (:mod:`tilecat.mask.augment`).
RESAMPLE_FRACTION = 0.5
#: Lowest threshold allowed.
THRESHOLD_FLOOR = 0.5


def _log(msg: str) -> None:
    print(f"[train masker] {msg}", file=sys.stderr, flush=True)


def _effective_prior(f: float, w: float) -> float | None:
    if not 0.0 < f < 1.0:
        return None
    odds = w * f / (1.0 - f)
    return float(odds / (1.0 + odds))


def _dihedral(t: Any, k: int) -> Any:
    import torch

    if k >= 4:
        t = torch.flip(t, dims=(-1,))
    return torch.rot90(t, k % 4, dims=(-2, -1))


def _evaluate(model: Any, x: np.ndarray, halo: int, batch_size: int) -> np.ndarray:
    from .infer import predict_probs

    return predict_probs(model, x, patch=x.shape[-1], halo=halo, batch_size=batch_size)


def threshold_rule(fpr_target: float) -> str:
    """The card's description of how thresholds are chosen."""
    return (f"lowest threshold whose false-positive rate is <= {fpr_target:g} on defect-free "
            f"pixels more than {GUARD} px from any defect (the guard band: a mask edge one "
            f"pixel wide is not a false detection), held-out split A (even patches); at "
            f"least {THRESHOLD_FLOOR}")


def heldout_thresholds_metrics(
    model: Any, x: np.ndarray, truth: np.ndarray, radius: int, fpr_target: float = FPR_TARGET,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-class thresholds (split A) and metrics (split B) on held-out patches.

    Parameters
    ----------
    model : MaskNet in eval mode
    x : ndarray, shape (n, 2, h, w)
        Prepared held-out patches.
    truth : ndarray of uint16, shape (n, h, w)
        Their truth bits.
    radius : int
        Receptive-field radius (inference halo).
    fpr_target : float
        False-positive rate defining the thresholds (see :func:`threshold_rule`).

    Returns
    -------
    thresholds : dict class -> float
    metrics : dict class -> dict (see :func:`tilecat.mask.metrics.class_metrics`),
        computed on split B (odd patches) with every pixel without the class as negative.
    """
    from scipy import ndimage

    from .data import bits_to_targets
    from .metrics import class_metrics, threshold_at_fpr

    probs = _evaluate(model, x, radius, 32)
    targets = bits_to_targets(truth)
    k_cls = len(DEFECT_CLASSES)
    near = np.stack([ndimage.binary_dilation(t > 0, np.ones((3, 3), bool), iterations=GUARD)
                     for t in truth])

    def flat(a: np.ndarray, part: slice) -> np.ndarray:
        return np.moveaxis(a[part], 1, 0).reshape(k_cls, -1)

    pa, ya = flat(probs, slice(0, None, 2)), flat(targets, slice(0, None, 2))
    pb, yb = flat(probs, slice(1, None, 2)), flat(targets, slice(1, None, 2))
    far_a = ~near[0::2].ravel()
    thresholds = {}
    for k, c in enumerate(DEFECT_CLASSES):
        sel = ya[k] | far_a
        thresholds[c] = threshold_at_fpr(ya[k][sel], pa[k][sel], fpr_target, THRESHOLD_FLOOR)
    metrics = class_metrics(yb, pb, DEFECT_CLASSES, thresholds=thresholds)
    far_b = ~near[1::2].ravel()
    hit = pb >= np.array([thresholds[c] for c in DEFECT_CLASSES])[:, None]
    for k, c in enumerate(DEFECT_CLASSES):
        metrics[c]["fpr_far_at_threshold"] = float(hit[k][far_b].mean())
    return thresholds, metrics


def train_masker(
    out_dir: str | Path,
    n_patches: int = 4000,
    epochs: int = 10,
    seed: int = 1,
    *,
    n_heldout: int = 600,
    data_dir: str | Path | None = None,
    train_data: str | Path | None = None,
    heldout_data: str | Path | None = None,
    widths: Sequence[int] = (16, 32, 64),
    space_to_depth: int = 1,
    refine: int = 0,
    batch_size: int = 16,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    fpr_target: float = FPR_TARGET,
    threads: int | None = 1,
    resample_fraction: float = RESAMPLE_FRACTION,
    workers: int = 1,
    name: str = "masker",
    sim_config: str | None = None,
    log: Callable[[str], None] = _log,
) -> dict[str, Any]:
    """Train the masker and write ``weights.safetensors`` + ``card.json`` into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Model directory (e.g. ``src/tilecat/data/models/masker``).
    n_patches : int
        Training patches (simulated unless ``train_data`` is given).
    epochs : int
        Passes over the training patches.
    seed : int
        Seed of the training data (held-out data: ``seed + 1000``), of the weight
        initialisation and of the batch order/augmentations.
    n_heldout : int
        Held-out patches (half for thresholds, half for metrics).
    data_dir : path, optional
        Where simulated patch stores are written and reused (default: a temporary
        directory, removed afterwards).
    train_data, heldout_data : path, optional
        Existing defect-patch stores to use instead of simulating.
    widths : sequence of int
        U-Net channels per level.
    space_to_depth : int
        Input pixel-unshuffle factor of :class:`tilecat.mask.net.MaskNet` (1: none).
    refine : int
        Channels of its full-resolution refinement (0: none).
    batch_size, lr, weight_decay : training hyperparameters.
    fpr_target : float
        Per-class false-positive rate defining the thresholds.
    resample_fraction : float
        Fraction of training (and held-out) patches made coadd-like
        (:func:`tilecat.mask.augment.coadd_like`) before preparation.
    threads : int or None
        torch intra-op threads (None: leave torch's default). Results are
        reproducible for a given thread count.
    workers : int
        Processes for the simulation.
    name : str
        Model name written in the card.
    sim_config : str, optional
        Simulation YAML passed to the simulator.

    Returns
    -------
    dict
        The model card as written.
    """
    import torch
    import torch.nn.functional as F

    from ..models import save_model
    from .data import bits_to_targets, load_patches, make_patches, pixel_frequencies
    from .net import ARCH, MaskNet, receptive_field
    from .prepare import BACK_SIZE, WEIGHT_CLIP

    if threads is not None:
        torch.set_num_threads(int(threads))
    out_dir = Path(out_dir)
    if data_dir is None and (train_data is None or heldout_data is None):
        with tempfile.TemporaryDirectory(prefix="masker-data-") as tmp:
            return train_masker(
                out_dir, n_patches, epochs, seed, n_heldout=n_heldout, data_dir=tmp,
                train_data=train_data, heldout_data=heldout_data, widths=widths,
                space_to_depth=space_to_depth, refine=refine,
                batch_size=batch_size, lr=lr, weight_decay=weight_decay, fpr_target=fpr_target,
                threads=threads, resample_fraction=resample_fraction, workers=workers,
                name=name, sim_config=sim_config, log=log)
    data_dir = Path(data_dir) if data_dir is not None else Path(".")
    heldout_seed = int(seed) + 1000
    if train_data is None:
        log(f"simulating {n_patches} training patches (seed {seed}) in {data_dir}")
        train_data = make_patches(data_dir / f"defects-train-s{seed}-n{n_patches}.zarr",
                                  n_patches, seed, False, workers, sim_config)
    if heldout_data is None:
        log(f"simulating {n_heldout} held-out patches (seed {heldout_seed})")
        heldout_data = make_patches(data_dir / f"defects-heldout-s{heldout_seed}-n{n_heldout}.zarr",
                                    n_heldout, heldout_seed, True, workers, sim_config)
    t0 = time.perf_counter()
    tr = load_patches(train_data, limit=n_patches, resample_fraction=resample_fraction,
                      seed=int(seed))
    ho = load_patches(heldout_data, limit=n_heldout, resample_fraction=resample_fraction,
                      seed=heldout_seed)
    log(f"prepared {len(tr.x)} training and {len(ho.x)} held-out patches "
        f"in {time.perf_counter() - t0:.0f} s")

    freq = pixel_frequencies(tr.truth)
    pos_w = {c: (min(POS_WEIGHT_MAX, math.sqrt((1 - f) / f)) if f > 0 else 1.0)
             for c, f in freq.items()}
    priors = {c: _effective_prior(freq[c], pos_w[c]) for c in DEFECT_CLASSES}

    torch.manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    model = MaskNet(in_channels=2, n_classes=len(DEFECT_CLASSES), widths=widths,
                    space_to_depth=space_to_depth, refine=refine)
    width, radius = receptive_field(model)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(tr.x)
    steps_per_epoch = n // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    pw = torch.tensor([pos_w[c] for c in DEFECT_CLASSES], dtype=torch.float32).view(1, -1, 1, 1)
    history = []
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(n)
        t1 = time.perf_counter()
        total = 0.0
        for s in range(steps_per_epoch):
            idx = np.sort(order[s * batch_size:(s + 1) * batch_size])
            xb = torch.from_numpy(tr.x[idx])
            yb = torch.from_numpy(bits_to_targets(tr.truth[idx]).astype(np.float32))
            k = int(rng.integers(8))
            xb = _dihedral(xb, k).contiguous(memory_format=torch.channels_last)
            yb = _dihedral(yb, k)
            logits = model(xb)
            loss = F.binary_cross_entropy_with_logits(logits, yb, pos_weight=pw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        history.append(total / max(1, steps_per_epoch))
        log(f"epoch {epoch + 1}/{epochs}: loss {history[-1]:.5f} "
            f"({time.perf_counter() - t1:.0f} s)")

    model.eval()
    thresholds, metrics = heldout_thresholds_metrics(model, ho.x, ho.truth, radius, fpr_target)
    log("held-out metrics: " + ", ".join(
        f"{c} auc={m['auc'] if m['auc'] is None else round(m['auc'], 4)}" for c, m in metrics.items()))

    card: dict[str, Any] = {
        "name": name,
        "version": 1,
        "task": "per-pixel multi-label defect classification (sigmoid per class)",
        "architecture": ARCH,
        "hyperparameters": {"in_channels": 2, "widths": [int(w) for w in widths],
                            "space_to_depth": int(space_to_depth), "refine": int(refine)},
        "classes": list(DEFECT_CLASSES),
        "receptive_field": {"width": int(width), "radius": int(radius), "stride": model.stride},
        "input": {
            "function": "tilecat.mask.prepare.prepare_band",
            "channels": ["arcsinh((F - sep background) / sigma(invvar, smoothed))",
                         "invvar (zeros filled from nearest neighbour), smoothed on the "
                         "background mesh, / its median, clipped"],
            "back_size": BACK_SIZE,
            "weight_clip": WEIGHT_CLIP,
        },
        "train_pixel_freq": freq,
        "pos_weight": pos_w,
        "train_priors": priors,
        "thresholds": thresholds,
        "threshold_rule": threshold_rule(fpr_target),
        "metrics": {"heldout_split_B": metrics},
        "training": {
            "function": "tilecat.mask.train.train_masker",
            "seed": int(seed),
            "n_patches": int(len(tr.x)),
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "resample_fraction": float(resample_fraction),
            "weight_decay": float(weight_decay),
            "optimizer": "AdamW + OneCycleLR",
            "loss": "BCEWithLogits, pos_weight = min(10, sqrt((1-f)/f))",
            "augmentation": f"random dihedral (flips, 90 deg rotations) per batch; "
                            f"{resample_fraction:g} of the patches made coadd-like "
                            f"(tilecat.mask.augment.coadd_like: native pixel 1-2 px, "
                            f"Lanczos-3 at a random shift, noise 0.75-1.0 of invvar sigma)",
            "torch": torch.__version__.split("+")[0],
            "threads": int(threads) if threads is not None else None,
            "loss_history": [round(v, 6) for v in history],
            "train_data": {"seed": tr.attrs.get("seed"), "heldout": tr.attrs.get("heldout"),
                           "defects_version": tr.attrs.get("defects_version", 1),
                           "recipe": tr.attrs.get("recipe")},
            "heldout_data": {"seed": ho.attrs.get("seed"), "heldout": ho.attrs.get("heldout"),
                           "defects_version": ho.attrs.get("defects_version", 1),
                             "n_patches": int(len(ho.x)), "recipe": ho.attrs.get("recipe")},
        },
    }
    card = save_model(model.to(memory_format=torch.contiguous_format), card, out_dir)
    log(f"wrote {out_dir} ({card['n_params']} parameters, sha256 {card['sha256'][:12]})")
    return card
