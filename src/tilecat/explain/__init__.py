"""Explain a model's answer for one object: Grad-CAM beside a Lupton RGB picture.

``explain(config, tile, object_id, head, answer, out_png)`` (wired as ``tilecat explain``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["explain"]


def explain(config: Mapping[str, Any], tile: str, object_id: int, head: str, answer: str,
            out_png: str | Path) -> dict[str, Any]:
    """Write a PNG: the object's colour image and the Grad-CAM map of one model output.

    Parameters
    ----------
    config : dict
        Validated configuration (``infer.device``, ``infer.model_dirs`` are used).
    tile : str
        Tile id; the stamp is read from its ``cutouts.zarr``.
    object_id : int
        The object (``object_id`` of the catalog).
    head : str
        Registered head name (``morphology``, ``structure``).
    answer : str
        The output to explain: a column name (``morph_spin_S_raw``) or its short form
        (``spin_S``, ``t_featured``; for structure ``r50``, ``sersic_n``, ``e1``, ``e2``).
    out_png : path
        Output PNG (written atomically).

    Returns
    -------
    dict
        ``object_id``, ``head``, ``answer``, ``index`` (output index), ``value``.

    Raises
    ------
    InputError
        Cutouts missing or object not in the tile.
    ModelError / ConfigError
        Unknown head, output or bad model.
    """
    import torch

    from ..atomic import atomic_path
    from ..errors import InputError
    from ..infer.cutouts import open_cutouts
    from ..infer.registry import get_head
    from ..survey import tile_paths
    from .gradcam import gradcam
    from .rgb import lupton_rgb

    path = tile_paths(dict(config), tile)["cutouts"]
    cut = open_cutouts(path, tile)
    where = np.flatnonzero(cut.object_id == int(object_id))
    if where.size == 0:
        raise InputError(tile, str(path), f"object_id {object_id} is not in the cutouts")
    i = int(where[0])
    stamp = np.nan_to_num(np.asarray(cut._stamp[i].values, dtype=np.float32))
    h = get_head(head)
    loaded = h.load(config, torch.device("cpu"))
    h.check_input(loaded, cut.bands, cut.size)
    index = h.output_index(loaded, answer)
    extra = []
    for v in loaded.inputs:
        if v in cut.variables:
            extra.append(cut.read(v, i, i + 1)[0])
        elif v == "psf_fwhm":
            from ..infer.engine import tile_psf_fwhm

            extra.append(tile_psf_fwhm(config, tile, cut.bands))
        else:
            raise InputError(tile, str(path), f"model {head!r} needs {v!r}, not in the cutouts")
    cam, value = gradcam(loaded.module.float(), stamp, index, tuple(extra))
    rgb = lupton_rgb(stamp, cut.bands)
    _figure(rgb, cam, f"{tile} object {object_id}", f"{head}: {answer} = {value:.3f}",
            out_png, atomic_path)
    return {"object_id": int(object_id), "head": head, "answer": answer, "index": index,
            "value": value}


def _figure(rgb: np.ndarray, cam: np.ndarray, title: str, subtitle: str,
            out_png: str | Path, atomic_path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(rgb, origin="lower", interpolation="nearest")
    ax1.set_title("Lupton RGB", fontsize=9)
    ax2.imshow(rgb.mean(axis=2), origin="lower", cmap="gray", interpolation="nearest")
    ax2.imshow(cam, origin="lower", cmap="inferno", alpha=0.55, vmin=0, vmax=1,
               interpolation="bilinear")
    ax2.set_title(f"Grad-CAM  {subtitle}", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
