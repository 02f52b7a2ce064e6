"""Train the morphology CNN on a simulated galaxy stamp set and ship weights + card."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["train_morphology", "question_loss", "swap_spin", "card_input", "split"]

VERSION = "1"


def question_loss(logits: "Any", targets: "Any") -> "Any":
    """Sum over questions of the mean cross-entropy over galaxies the question applies to.

    Parameters
    ----------
    logits : tensor (B, N_ANSWERS)
    targets : int64 tensor (B, n_questions), -1 where a question does not apply.
    """
    import torch

    from .tree import QUESTIONS, answer_slices

    total = logits.new_zeros(())
    for j, (q, sl) in enumerate(zip(QUESTIONS, answer_slices().values())):
        t = targets[:, j]
        if bool((t >= 0).any()):
            total = total + torch.nn.functional.cross_entropy(logits[:, sl], t, ignore_index=-1)
    return total


def swap_spin(targets: "Any", k: int) -> "Any":
    """Targets after D4 element ``k``: a mirror (k >= 4) swaps S (0) and Z (1)."""
    from .tree import QUESTIONS

    if k < 4:
        return targets
    j = [q.name for q in QUESTIONS].index("spin")
    out = targets.clone()
    col = out[:, j]
    out[:, j] = col.where(col < 0, 1 - col)
    return out


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation index split."""
    perm = np.random.default_rng([seed, 7]).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def card_input(stamps: Any) -> dict[str, Any]:
    """The card's ``input`` section for a :class:`~tilecat.morphology.dataset.StampSet`."""
    return {
        "bands": list(stamps.bands),
        "stamp_size": int(stamps.stamps.shape[-1]),
        "pixel_scale": float(stamps.pixel_scale),
        "normalisation": "arcsinh(F / sigma_band), sigma_band = background noise per band",
    }


def _provenance(stamps: Any, path: str | Path) -> dict[str, Any]:
    a = stamps.attrs
    keep = {k: a[k] for k in ("seed", "heldout", "recipe", "class_frequencies", "simver",
                              "parts") if k in a}
    paths = ([Path(p).name for p in path] if isinstance(path, (list, tuple))
             else Path(path).name)
    return {"path": paths, "n_objects": len(stamps), **keep}


def train_morphology(
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
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the morphology network and write ``weights.safetensors`` + ``card.json``.

    Parameters
    ----------
    train : path
        Galaxy stamp set(s) (``tilecat simulate-stamps --kind galaxy``); a list is
        concatenated.
    out_dir : path
        Model directory to write (e.g. ``src/tilecat/data/models/morphology``).
    heldout : path, optional
        Held-out stamp set (other seed, PSF and depth: ``--heldout``) for the card's
        metrics; without it the metrics are on the validation split.
    epochs, batch_size, lr, seed, threads : training hyperparameters
        ``threads`` = torch CPU threads (1 keeps the machine usable for others).
    val_fraction : float
        Fraction of ``train`` kept for validation / best-epoch selection.
    limit : int, optional
        Use only the first ``limit`` stamps of ``train``.
    arch : dict, optional
        Overrides of :data:`~tilecat.morphology.net.DEFAULT_ARCH`.
    recipe : str, optional
        How the training data were made (commands), recorded in the card.
    degrade_prob : float
        Fraction of training stamps given worse observing conditions (extra PSF
        blur, shallower depth: :func:`tilecat.morphology.fit.degrade`) so the model
        holds up beyond the training set's PSF and depth ranges.
    init : path, optional
        Model directory to start from (warm start; its architecture is used).
    log : callable
        Progress output.

    Returns
    -------
    dict
        The model card as written.
    """
    import torch

    from ..models import save_model
    from .dataset import load_stamp_sets, load_stamps
    from .fit import FitConfig, fit, predict
    from .labels import encode, priors
    from .metrics import arms_resolved, morphology_metrics
    from .model import MorphologyNet, SpinSymmetric
    from .net import DEFAULT_ARCH
    from .tree import QUESTIONS

    torch.set_num_threads(threads)
    data = load_stamp_sets(train, limit=limit)
    targets = encode(data.labels, training=True)
    tr, va = split(len(data), val_fraction, seed)
    log(f"training set {train}: {len(data)} stamps ({len(tr)} train, {len(va)} validation)")
    arch = {**DEFAULT_ARCH, **(arch or {})}
    if arch.get("psf_input") and data.psf_fwhm is None:
        from ..errors import InputError

        raise InputError("-", str(train), "stamp set has no psf_fwhm(object, band)")
    torch.manual_seed(seed)
    net = MorphologyNet(len(data.bands), arch)
    init_training = None
    if init is not None:  # warm start from a saved model (same architecture)
        from ..models import load_model
        from .model import build

        start, start_card = load_model(init, build)
        arch = start_card.get("arch", arch)
        init_training = start_card.get("training")
        net = start.net
    cfg = FitConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, threads=threads,
                    degrade_prob=degrade_prob)
    aux = None
    if arch.get("psf_input"):
        psf = np.asarray(data.psf_fwhm, np.float32)
        aux = (psf[tr], psf[va])
    history = fit(net, data.stamps[tr], targets[tr], question_loss, swap_spin,
                  (data.stamps[va], targets[va]), cfg, log, aux=aux,
                  pixel_scale=data.pixel_scale)
    model = SpinSymmetric(net, data.pixel_scale).eval()

    if heldout is not None:
        ev = load_stamps(heldout)
        ev_targets, ev_name = encode(ev.labels), "heldout"
        ev_stamps, ev_snr = ev.stamps, ev.labels.get("snr")
        ev_psf = ev.psf_fwhm
    else:
        ev, ev_targets, ev_name = None, targets[va], "validation"
        ev_stamps, ev_snr = data.stamps[va], data.labels.get("snr", np.full(len(data), np.nan))[va]
        ev_psf = None if data.psf_fwhm is None else data.psf_fwhm[va]
    probs = predict(model, ev_stamps,
                    aux=np.asarray(ev_psf, np.float32) if arch.get("psf_input") else None)
    ev_r50 = (ev.labels if ev is not None else {k: np.asarray(v)[va] for k, v in
                                                 data.labels.items()}).get("r50")
    resolved = None
    if ev_r50 is not None and ev_psf is not None:
        iref = data.bands.index("r") if "r" in data.bands else len(data.bands) // 2
        resolved = arms_resolved(ev_r50, np.asarray(ev_psf)[:, iref])
    metrics = morphology_metrics(probs, ev_targets,
                                 None if ev_snr is None else np.asarray(ev_snr, float),
                                 resolved=resolved)
    log(f"{ev_name}: top-level accuracy {metrics['top_level_accuracy']:.3f}, "
        f"spin accuracy {metrics['spin_accuracy']}")
    card = {
        "name": "morphology",
        "version": VERSION,
        "task": "galaxy morphology decision tree: conditional answer probabilities",
        "architecture": "MorphologyNet (conv trunk + MLP) wrapped in SpinSymmetric "
                        "(mirror-symmetrised test-time average, S<->Z swapped)",
        "arch": arch,
        "input": card_input(data),
        "extra_inputs": ["psf_fwhm (arcsec, per band)"] if arch.get("psf_input") else [],
        "questions": [[q.name, list(q.answers)] for q in QUESTIONS],
        "outputs": "softmax per question; columns morph_<question>_<answer>_raw",
        "priors_train": priors(encode(data.labels)[tr]),
        "training": {
            "data": _provenance(data, train),
            "recipe": recipe,
            "init_from": init_training,
            "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "optimizer": "AdamW, one-cycle lr, weight decay 1e-4",
            "degrade": {"prob": cfg.degrade_prob, "max_blur_pix": cfg.degrade_max_blur,
                        "min_flux_scale": cfg.degrade_min_scale,
                        "what": "extra Gaussian PSF blur + shallower depth, noise restored"},
            "augmentation": "dihedral D4 (mirror swaps spin S/Z)",
            "loss": "sum over questions of cross-entropy on galaxies the question applies to",
            "val_fraction": val_fraction, "history": history,
        },
        "evaluation": {
            "set": ev_name,
            "data": _provenance(ev, heldout) if ev is not None else None,
            "metrics": metrics,
        },
    }
    return save_model(model, card, out_dir)
