"""Matplotlib figures of the QA report (Agg backend, no display).

Every function returns a ``matplotlib.figure.Figure``; :func:`tilecat.qa.html.figure_html`
embeds and closes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["reliability_figure", "pit_figure", "zz_figure", "nz_figure", "roc_figure",
           "overlay_figure", "gallery_figure", "em_figure"]

_STAGE_STYLE = {"raw": ("tab:red", "raw"), "cal": ("tab:blue", "calibrated"),
                "post": ("tab:green", "prior-corrected"), "before": ("tab:red", "before"),
                "after": ("tab:blue", "after")}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def reliability_figure(panels: Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]],
                       title: str = "", min_count: int = 10) -> Any:
    """Reliability diagrams, one panel per question.

    Parameters
    ----------
    panels : mapping
        Panel title -> {stage: reliability rows (``confidence``, ``accuracy``, ``n``)}.
    min_count : int
        Bins with fewer objects are not drawn (their accuracy is mostly noise).
    """
    plt = _plt()
    n = max(1, len(panels))
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, stages) in zip(axes.ravel(), panels.items()):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for stage, table in stages.items():
            table = [r for r in table if r.get("n", min_count) >= min_count]
            if not table:
                continue
            color, label = _STAGE_STYLE.get(stage, ("k", stage))
            x = [r["confidence"] for r in table]
            y = [r["accuracy"] for r in table]
            ax.plot(x, y, "o-", color=color, ms=3, lw=1, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def pit_figure(hists: Mapping[str, Sequence[float]], title: str = "PIT") -> Any:
    """PIT histograms (fractions per equal bin; uniform = 1/n_bins) per stage."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for stage, h in hists.items():
        h = np.asarray(h, float)
        if h.size == 0:
            continue
        color, label = _STAGE_STYLE.get(stage, ("k", stage))
        edges = np.linspace(0, 1, h.size + 1)
        ax.stairs(h * h.size, edges, color=color, label=label, lw=1.5)
    ax.axhline(1.0, color="0.5", ls="--", lw=1)
    ax.set_xlabel("PIT")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def zz_figure(z_true: np.ndarray, z_phot: Mapping[str, np.ndarray], z_max: float) -> Any:
    """Photometric vs true redshift, one panel per estimate."""
    plt = _plt()
    n = max(1, len(z_phot))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    for ax, (name, zp) in zip(axes.ravel(), z_phot.items()):
        ax.scatter(z_true, zp, s=2, alpha=0.4, color="k", rasterized=True)
        ax.plot([0, z_max], [0, z_max], color="tab:red", lw=1)
        for s in (0.15, -0.15):
            ax.plot([0, z_max], [s, z_max + s * (1 + z_max)], color="0.6", lw=0.8, ls="--")
        ax.set_xlim(0, z_max)
        ax.set_ylim(0, z_max)
        ax.set_xlabel("z true")
        ax.set_ylabel(name)
    fig.tight_layout()
    return fig


def nz_figure(centres: np.ndarray, curves: Mapping[str, np.ndarray], width: float) -> Any:
    """N(z) curves on the bin grid (probability density per unit z)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, p in curves.items():
        p = np.asarray(p, float)
        ax.plot(centres, p / max(p.sum(), 1e-300) / width, label=name, lw=1.5)
    ax.set_xlabel("z")
    ax.set_ylabel("N(z) (normalised)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def roc_figure(metrics: Mapping[str, Mapping[str, Any]]) -> Any:
    """Defect ROC per class: full curves when the card has them (``roc``: fpr, tpr),
    else the operating points it records (TPR at fixed FPR, at the threshold)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in metrics.items():
        auc = m.get("auc")
        label = f"{name} (AUC {auc:.3f})" if isinstance(auc, (int, float)) else f"{name}"
        roc = m.get("roc")
        if roc and roc.get("fpr") and roc.get("tpr"):
            ax.plot(roc["fpr"], roc["tpr"], lw=1.2, label=label)
            continue
        pts = []
        for k, v in m.items():
            if k.startswith("tpr_at_fpr_") and v is not None:
                pts.append((float(k.removeprefix("tpr_at_fpr_")), float(v)))
        if m.get("fpr_at_threshold") is not None and m.get("tpr_at_threshold") is not None:
            pts.append((max(float(m["fpr_at_threshold"]), 1e-7), float(m["tpr_at_threshold"])))
        if pts:
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=4, lw=1, label=label)
    ax.set_xscale("log")
    ax.set_xlim(1e-6, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false-positive rate (pixels)")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def overlay_figure(image: np.ndarray, mask: np.ndarray, names: Sequence[str],
                   title: str) -> Any:
    """A band image (arcsinh stretch) with the defect bits overlaid in colours.

    Parameters
    ----------
    image : ndarray (ny, nx)
        Flux (any unit); stretched as arcsinh(image / robust sigma).
    mask : ndarray of uint16 (ny, nx)
        Defect bits (bit k = ``names[k]``).
    """
    plt = _plt()
    from matplotlib.patches import Patch

    img = np.nan_to_num(np.asarray(image, np.float64))
    med = np.median(img)
    sig = 1.4826 * np.median(np.abs(img - med)) or 1.0
    show = np.arcsinh((img - med) / sig)
    fig, ax = plt.subplots(figsize=(7, 7 * img.shape[0] / max(img.shape[1], 1)))
    top = max(float(np.percentile(show, 99.5)), 1.0)
    ax.imshow(show, origin="lower", cmap="gray", vmin=-1.0, vmax=top)
    cmap = plt.get_cmap("tab10")
    handles = []
    rgba = np.zeros(mask.shape + (4,))
    for k, name in enumerate(names):
        hit = (np.asarray(mask).astype(np.int64) >> k) & 1
        if hit.any():
            c = cmap(k % 10)
            rgba[hit.astype(bool)] = (c[0], c[1], c[2], 0.75)
            handles.append(Patch(color=c, label=f"{name} ({int(hit.sum())} px)"))
    ax.imshow(rgba, origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.8)
    fig.tight_layout()
    return fig


def gallery_figure(images: Sequence[np.ndarray], titles: Sequence[str], title: str,
                   columns: int = 8) -> Any:
    """A row (or rows) of RGB cutouts, ``(S, S, 3)`` uint8 each."""
    plt = _plt()
    n = max(1, len(images))
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.7 * rows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, im, t in zip(axes.ravel(), images, titles):
        ax.imshow(im, origin="lower", interpolation="nearest")
        ax.set_title(t, fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def em_figure(log: Sequence[Mapping[str, Any]]) -> Any:
    """EM convergence: largest prior change and log-likelihood gain per iteration."""
    plt = _plt()
    it = [r["iter"] for r in log]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3))
    a1.semilogy(it, [max(r["max_change"], 1e-16) for r in log], "o-", ms=3)
    a1.set_xlabel("iteration")
    a1.set_ylabel("largest prior change")
    names = sorted({k for r in log for k in r.get("loglik", {})})
    for name in names:
        v = np.array([r["loglik"].get(name, np.nan) for r in log], float)
        a2.plot(it, v - v[0], label=name, lw=1)
    a2.set_xlabel("iteration")
    a2.set_ylabel("log-likelihood gain")
    a2.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig
