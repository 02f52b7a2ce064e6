"""Tests of the masking stage: rules, tile store layout, prior correction, model I/O."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tilecat.bits import DEFECT_CLASSES, bit
from tilecat.config import validate_config
from tilecat.errors import InputError, ModelError
from tilecat.mask import run_mask
from tilecat.mask.priors import correct_binary, correct_probs
from tilecat.mask.rules import rule_bits
from tilecat.store import open_tile, write_arrays, write_group

BANDS = ["g", "r"]


def _config(tmp_path: Path, **mask) -> dict:
    cfg = {
        "survey": {
            "name": "t", "bands": BANDS, "pixel_scale": 0.262,
            "zeropoints": {b: 22.5 for b in BANDS},
            "files": {"image": {"pattern": "x/{tile}-{band}.fits"}},
        },
        "tiles": "tiles.tsv",
        "results": str(tmp_path / "results"),
        "mask": mask,
    }
    return validate_config(cfg)


def _make_store(cfg: dict, tile: str, ny: int = 70, nx: int = 90, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 1, (len(BANDS), ny, nx)).astype(np.float32)
    invvar = np.ones_like(image)
    dq = np.zeros(image.shape, np.uint16)
    invvar[0, 5, 7] = 0.0                       # nodata by weight
    image[1, 10, 11] = np.nan                   # nodata by value
    dq[0, 20, 30] = bit("saturated")            # upstream flags carried over
    dq[1, 3:6, 40] = bit("bad")
    invvar[1, 3:6, 40] = 0.0
    store = Path(cfg["results"]) / "tiles" / tile / "tile.zarr"
    write_group(store, {"tile": tile})
    band = np.array(BANDS, dtype=object)
    write_arrays(store, {
        "image": xr.DataArray(image, dims=("band", "y", "x"), coords={"band": band}),
        "invvar": xr.DataArray(invvar, dims=("band", "y", "x"), coords={"band": band}),
        "dq": xr.DataArray(dq, dims=("band", "y", "x"), coords={"band": band}),
    })
    return store, image, invvar, dq


def test_rule_bits_carry_dq_and_nodata():
    img = np.zeros((2, 4, 4), np.float32)
    iv = np.ones_like(img)
    dq = np.zeros(img.shape, np.uint16)
    iv[0, 1, 1] = 0
    iv[0, 2, 2] = np.inf
    img[1, 0, 0] = np.inf
    dq[1, 3, 3] = bit("bad") | bit("saturated")
    m = rule_bits(img, iv, dq)
    assert m[0, 1, 1] == bit("nodata")
    assert m[0, 2, 2] == bit("nodata")
    assert m[1, 0, 0] == bit("nodata")
    assert m[1, 3, 3] == bit("bad") | bit("saturated")
    assert np.count_nonzero(m) == 4


def test_run_mask_rules_only_layout(tmp_path):
    cfg = _config(tmp_path, model=None)
    store, image, invvar, dq = _make_store(cfg, "t0001")
    run_mask(cfg, "t0001")
    ds = open_tile(store)
    assert list(ds["class"].values) == list(DEFECT_CLASSES)
    assert ds["defect_prob"].dims == ("class", "band", "y", "x")
    assert ds["defect_prob"].dtype == np.uint8
    assert ds["defect_prob"].shape == (7, 2, 70, 90)
    assert ds["defect_mask"].dims == ("band", "y", "x")
    assert ds["defect_mask"].dtype == np.uint16
    assert list(ds["band"].values) == BANDS
    m = ds["defect_mask"].values
    assert m[0, 5, 7] == bit("nodata")
    assert m[1, 10, 11] == bit("nodata")
    assert m[0, 20, 30] == bit("saturated")
    assert (m[1, 3:6, 40] == (bit("bad") | bit("nodata"))).all()
    assert np.count_nonzero(m) == 6
    assert int(ds["defect_prob"].values.max()) == 0
    # chunk layout as documented
    meta = json.loads((store / "defect_prob" / "zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 1, 1024, 1024]
    meta = json.loads((store / "defect_mask" / "zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 1024, 1024]
    # the inputs are untouched
    np.testing.assert_array_equal(ds["dq"].values, dq)


def test_run_mask_missing_store(tmp_path):
    cfg = _config(tmp_path)
    with pytest.raises(InputError, match="nope"):
        run_mask(cfg, "nope")


def test_run_mask_unknown_model(tmp_path):
    cfg = _config(tmp_path, model=str(tmp_path / "no-such-model"))
    _make_store(cfg, "t0002", 48, 48)
    with pytest.raises(ModelError, match="no-such-model"):
        run_mask(cfg, "t0002")


def test_prior_correction_two_class():
    p = np.array([0.0, 0.2, 0.5, 0.9, 1.0], np.float32)
    # same prior: identity
    np.testing.assert_allclose(correct_binary(p, 0.1, 0.1), p, atol=1e-6)
    q = correct_binary(p, 0.1, 0.01)
    # rarer in the survey: probabilities go down, monotone, endpoints fixed
    assert (q[1:-1] < p[1:-1]).all() and (np.diff(q) > 0).all()
    assert q[0] == 0 and q[-1] == pytest.approx(1.0)
    # the DESIGN formula with two classes {c, not c}
    pt, ps, x = 0.1, 0.01, 0.5
    num = x * ps / pt
    expect = num / (num + (1 - x) * (1 - ps) / (1 - pt))
    assert q[2] == pytest.approx(expect, rel=1e-6)
    stack = np.full((7, 2, 2), 0.5, np.float32)
    out = correct_probs(stack, DEFECT_CLASSES, {"cosmic_ray": 0.1}, {"cosmic_ray": 0.01})
    assert out[0, 0, 0] == pytest.approx(expect, rel=1e-6)
    np.testing.assert_array_equal(out[1:], stack[1:])
