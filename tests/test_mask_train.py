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
    # reproducible: the same call gives byte-identical weights and card
    train_masker(tmp_path / "m2", n_patches=48, epochs=2, seed=3, n_heldout=16,
                 train_data=tr, heldout_data=ho, widths=(8, 16, 32), batch_size=8,
                 lr=1e-2, log=lambda m: None)
    for name in ("weights.safetensors", "card.json"):
        assert (tmp_path / "m" / name).read_bytes() == (tmp_path / "m2" / name).read_bytes()


def test_coadd_like_augmentation():
    from scipy import ndimage

    from tilecat.mask.augment import coadd_kernel, coadd_like, resample_some

    # a zero-width native pixel at zero shift is the identity; kernels conserve flux
    np.testing.assert_allclose(coadd_kernel(1e-9, 0.0), np.eye(9)[4], atol=1e-6)
    assert abs(coadd_kernel(1.7, 0.3).sum() - 1.0) < 1e-12
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (128, 128)).astype(np.float32)
    y = coadd_like(x, np.random.default_rng(5))
    # coadd-like noise: rms 0.75-1.0, and much more power at 2-pixel scales than white
    assert 0.7 < y.std() < 1.05
    white = ndimage.gaussian_filter(x, 1).std() / x.std()
    assert ndimage.gaussian_filter(y, 1).std() / y.std() > 1.3 * white
    stack = np.stack([x] * 20)
    out = resample_some(stack, 0.5, np.random.default_rng(1))
    changed = [not np.array_equal(out[i], x) for i in range(20)]
    assert 3 < sum(changed) < 17
    np.testing.assert_array_equal(out, resample_some(stack, 0.5, np.random.default_rng(1)))


def test_make_patches_remakes_stores_of_other_defect_physics(tmp_path, monkeypatch):
    """A cached patch store is reused only if it was made with the simulator's current
    defect physics (DEFECTS_VERSION): a store of older physics is simulated again."""
    import tilecat.simulate.cli as simcli
    from tilecat.mask.data import make_patches
    from tilecat.simulate.defects import DEFECTS_VERSION

    calls = []
    monkeypatch.setattr(simcli, "simulate_stamps_main", lambda args: calls.append(args))
    path = _store(tmp_path / "p.zarr", 4, 7, True)          # no defects_version: physics 1
    make_patches(path, 4, 7, heldout=True)
    assert len(calls) == 1 and calls[0].seed == 7 and calls[0].heldout
    ds = xr.open_zarr(path, consolidated=False)
    ds.attrs["defects_version"] = DEFECTS_VERSION
    ds.to_zarr(tmp_path / "q.zarr", zarr_format=3, consolidated=False)
    make_patches(tmp_path / "q.zarr", 4, 7, heldout=True)     # current physics: reused
    assert len(calls) == 1
    make_patches(tmp_path / "q.zarr", 4, 8, heldout=True)     # other seed: remade
    assert len(calls) == 2
