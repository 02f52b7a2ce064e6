"""``tilecat mask TILE``: per-pixel defect probabilities and bits of one tile.

Reads ``tile.zarr`` (``image``, ``invvar``, ``dq`` per band) and writes

- ``class(class)``: the defect class names (``tilecat.bits.DEFECT_CLASSES``);
- ``defect_prob(class, band, y, x) uint8``: round(255 × probability), prior-corrected to
  the survey rates ``mask.priors`` when given (zeros when no model is configured);
- ``defect_mask(band, y, x) uint16``: input ``dq`` bits (carried over) | ``nodata`` by
  rule (invvar 0 or non-finite pixel) | network bit k where the *raw* probability of
  class k reaches the card's threshold (an operating point on the validation ROC curve,
  which a monotone prior correction does not move).

Chunks (1, 1, 1024, 1024) and (1, 1024, 1024).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bits import DEFECT_CLASSES
from ..errors import InputError
from ..tiles import validate_tile_id

__all__ = ["run_mask", "mask_arrays"]

CHUNK = 1024


def _band_planes(ds: Any, tile: str, store: str, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    image = np.asarray(ds["image"].isel(band=i).values, dtype=np.float32)
    invvar = np.asarray(ds["invvar"].isel(band=i).values, dtype=np.float32)
    dq = np.asarray(ds["dq"].isel(band=i).values) if "dq" in ds else None
    if invvar.shape != image.shape or (dq is not None and dq.shape != image.shape):
        raise InputError(tile, store, "image, invvar and dq shapes differ")
    return image, invvar, dq


def mask_arrays(
    image: np.ndarray,
    invvar: np.ndarray,
    dq: np.ndarray | None,
    mask_cfg: dict[str, Any],
    model: Any = None,
    card: dict[str, Any] | None = None,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Masker outputs for a stack of band images (numpy in, numpy out).

    Parameters
    ----------
    image, invvar : ndarray, shape (n_band, ny, nx)
        Flux and inverse variance.
    dq : ndarray of uint16, shape (n_band, ny, nx), or None
        Input data-quality bits.
    mask_cfg : dict
        The ``mask`` config section (``batch_size``, ``patch``, ``halo``, ``priors``).
    model, card :
        Loaded masker (see :func:`tilecat.mask.model.load_masker`), or None for rules only.
    device : torch.device, optional

    Returns
    -------
    prob : ndarray of uint8, shape (n_class, n_band, ny, nx)
        round(255 × prior-corrected probability).
    mask : ndarray of uint16, shape (n_band, ny, nx)
        Bits, see the module docstring.
    """
    from .rules import rule_bits

    nb, ny, nx = image.shape
    k = len(DEFECT_CLASSES)
    prob = np.zeros((k, nb, ny, nx), dtype=np.uint8)
    mask = rule_bits(image, invvar, dq)
    if model is None:
        return prob, mask
    assert card is not None
    from .infer import predict
    from .model import halo_for
    from .prepare import prepare_band
    from .priors import correct_probs

    thr = card["thresholds"]
    thresholds = np.array([float(thr[c]) for c in DEFECT_CLASSES], dtype=np.float32)
    weights = (np.uint16(1) << np.arange(k, dtype=np.uint16)).astype(np.uint16)
    priors = dict(mask_cfg.get("priors") or {})
    p_train = card.get("train_priors", {})
    inputs = np.stack([prepare_band(image[i], invvar[i]) for i in range(nb)])

    def sink(i: int, y0: int, y1: int, x0: int, x1: int, p: np.ndarray) -> None:
        hit = p >= thresholds[:, None, None]
        bits = np.bitwise_or.reduce(hit.astype(np.uint16) * weights[:, None, None], axis=0)
        mask[i, y0:y1, x0:x1] |= bits.astype(np.uint16)
        q = correct_probs(p, DEFECT_CLASSES, p_train, priors) if priors else p
        prob[:, i, y0:y1, x0:x1] = np.rint(np.clip(q, 0.0, 1.0) * 255.0).astype(np.uint8)

    predict(model, inputs, sink,
            patch=int(mask_cfg.get("patch", 256)),
            halo=halo_for(card, mask_cfg.get("halo")),
            batch_size=int(mask_cfg.get("batch_size", 8)),
            device=device)
    return prob, mask


def run_mask(config: dict[str, Any], tile: str) -> None:
    """Mask one tile: read its ``tile.zarr``, write ``class``, ``defect_prob``, ``defect_mask``.

    Parameters
    ----------
    config : dict
        Validated tilecat config (``mask`` section: ``model`` null = rules only,
        ``"default"`` = the shipped masker, or a model directory; ``batch_size``,
        ``patch``, ``halo``, ``device``, ``priors``).
    tile : str
        Tile id.

    Raises
    ------
    InputError
        The tile store is missing or lacks ``image``/``invvar``.
    ModelError
        The configured model cannot be loaded (e.g. checksum mismatch).
    """
    import xarray as xr

    from ..store import open_tile, write_arrays
    from ..survey import tile_paths

    validate_tile_id(tile)
    store = tile_paths(config, tile)["store"]
    if not (store / "zarr.json").is_file():
        raise InputError(tile, str(store), "no tile store (run `tilecat ingest` first)")
    ds = open_tile(store)
    for name in ("image", "invvar"):
        if name not in ds:
            raise InputError(tile, str(store), f"tile store has no {name!r} array")
    mcfg = dict(config.get("mask") or {})
    bands = [str(b) for b in ds["band"].values]
    model = card = device = None
    if mcfg.get("model"):
        from ..models import select_device
        from .model import load_masker

        device = select_device(str(mcfg.get("device", "auto")))
        model, card = load_masker(mcfg["model"], device=device)
    planes = [_band_planes(ds, tile, str(store), i) for i in range(len(bands))]
    image = np.stack([p[0] for p in planes])
    invvar = np.stack([p[1] for p in planes])
    dq = None if planes[0][2] is None else np.stack([p[2] for p in planes])
    del planes
    prob, mask = mask_arrays(image, invvar, dq, mcfg, model, card, device)

    attrs: dict[str, Any] = {"model": None}
    if card is not None:
        attrs = {
            "model": str(card.get("name", mcfg["model"])),
            "model_sha256": str(card.get("sha256", "")),
            "thresholds": {c: float(card["thresholds"][c]) for c in DEFECT_CLASSES},
            "train_priors": card.get("train_priors", {}),
            "priors": dict(mcfg.get("priors") or {}),
        }
    classes = np.array(DEFECT_CLASSES, dtype=object)
    band_coord = np.array(bands, dtype=object)
    arrays = {
        "class": xr.DataArray(classes, dims=("class",), name="class"),
        "defect_prob": xr.DataArray(
            prob, dims=("class", "band", "y", "x"),
            coords={"class": classes, "band": band_coord},
            attrs={"description": "defect probability x 255 (prior-corrected when priors are set)",
                   "scale": 1.0 / 255.0, **attrs}),
        "defect_mask": xr.DataArray(
            mask, dims=("band", "y", "x"), coords={"band": band_coord},
            attrs={"description": "bit k = tilecat.bits.BITS; input dq | nodata rule | network",
                   **attrs}),
    }
    write_arrays(store, arrays, chunks={
        "defect_prob": (1, 1, CHUNK, CHUNK),
        "defect_mask": (1, CHUNK, CHUNK),
    })
