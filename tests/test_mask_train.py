"""Trainer smoke test on a tiny hand-made defect-patch store (the real recipe runs the
simulator; here only the mechanics: data -> loss -> thresholds -> card -> loadable)."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from tilecat.bits import DEFECT_CLASSES, bit
from tilecat.mask.model import load_masker
from tilecat.mask.train import train_masker


def _store(path, n, seed, heldout):
    rng = np.random.default_rng(seed)
    s = 48
    flux = rng.normal(0, 1, (n, s, s)).astype(np.float32)
    truth = np.zeros((n, s, s), np.uint16)
    for i in range(n):
        for _ in range(3):
            y, x = rng.integers(2, s - 2, 2)
            flux[i, y, x] += 50
            truth[i, y, x] |= bit("cosmic_ray")
        c = rng.integers(0, s)
        flux[i, :, c] += 8 if i % 2 else 0
        truth[i, :, c] |= bit("hot") if i % 2 else 0
    ds = xr.Dataset({
        "flux": (("patch", "y", "x"), flux),
        "invvar": (("patch", "y", "x"), np.ones_like(flux)),
        "dq": (("patch", "y", "x"), np.zeros_like(truth)),
        "truth": (("patch", "y", "x"), truth),
    }, attrs={"seed": seed, "heldout": heldout})
    ds.to_zarr(path, zarr_format=3, consolidated=False)
    return path


def test_train_masker_smoke(tmp_path):
    tr = _store(tmp_path / "tr.zarr", 48, 1, False)
    ho = _store(tmp_path / "ho.zarr", 16, 2, True)
    card = train_masker(tmp_path / "m", n_patches=48, epochs=2, seed=3, n_heldout=16,
                        train_data=tr, heldout_data=ho, widths=(8, 16, 32), batch_size=8,
                        lr=1e-2, log=lambda m: None)
    assert set(card["thresholds"]) == set(DEFECT_CLASSES)
    assert 0 < card["train_pixel_freq"]["cosmic_ray"] < 0.01
    assert card["train_priors"]["cosmic_ray"] > card["train_pixel_freq"]["cosmic_ray"]
    assert card["metrics"]["heldout_split_B"]["cosmic_ray"]["auc"] > 0.9
    assert card["training"]["seed"] == 3
    model, card2 = load_masker(tmp_path / "m")
    assert card2["sha256"] == card["sha256"]
    json.dumps(card2)  # serialisable


def test_lanczos_resampling_augmentation():
    from tilecat.mask.augment import lanczos_shift, resample_some

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (96, 96)).astype(np.float32)
    np.testing.assert_allclose(lanczos_shift(x, 0.0, 0.0), x, atol=1e-6)
    y = lanczos_shift(x, 0.5, 0.5)
    # coadd-like: correlated, lower pixel noise (flux conserved)
    assert 0.7 < y.std() < 0.85
    d = np.zeros((32, 32), np.float32)
    d[16, 16] = 1.0
    assert abs(lanczos_shift(d, 0.3, -0.4).sum() - 1.0) < 1e-5
    c = np.corrcoef(y[:, :-1].ravel(), y[:, 1:].ravel())[0, 1]
    assert c > 0.2
    stack = np.stack([x] * 20)
    out = resample_some(stack, 0.5, np.random.default_rng(1))
    changed = [not np.array_equal(out[i], x) for i in range(20)]
    assert 3 < sum(changed) < 17
    np.testing.assert_array_equal(out, resample_some(stack, 0.5, np.random.default_rng(1)))
