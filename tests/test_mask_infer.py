"""Masker network and tiled inference: exact stitching, model I/O, run_mask with a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from tilecat.bits import DEFECT_CLASSES, bit
from tilecat.config import validate_config
from tilecat.errors import ModelError
from tilecat.mask import run_mask
from tilecat.mask.infer import predict_probs, round_up
from tilecat.mask.model import load_masker
from tilecat.mask.net import MaskNet, build_masker, receptive_field
from tilecat.mask.prepare import fill_from_neighbours, prepare_band
from tilecat.models import load_model, save_model, select_device
from tilecat.store import open_tile, write_arrays, write_group


def _net(seed: int = 0, space_to_depth: int = 1, refine: int = 0) -> MaskNet:
    torch.manual_seed(seed)
    m = MaskNet(widths=(8, 16, 32), space_to_depth=space_to_depth, refine=refine)
    with torch.no_grad():  # non-trivial BatchNorm statistics, used in eval mode
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _card(model: MaskNet, thr: float = 0.5) -> dict:
    width, radius = receptive_field(model)
    return {
        "name": "test-masker",
        "architecture": "tilecat.mask.MaskNet",
        "hyperparameters": {"in_channels": 2, "widths": list(model.widths),
                            "space_to_depth": model.space_to_depth,
                            "refine": model.refine},
        "classes": list(DEFECT_CLASSES),
        "receptive_field": {"width": width, "radius": radius},
        "thresholds": {c: thr for c in DEFECT_CLASSES},
        "train_priors": {c: 0.01 for c in DEFECT_CLASSES},
    }


ARCHS = [(1, 0), (2, 0), (2, 4)]  # (space_to_depth, refine)


@pytest.mark.parametrize("s, r", ARCHS)
def test_receptive_field_is_exact(s, r):
    m = _net(space_to_depth=s, refine=r)
    width, radius = receptive_field(m)
    # 3x3 convs at 1/s resolution: the radius scales with the unshuffle factor
    assert 20 * s <= radius <= 40 * s and width <= 2 * radius + 1
    # an input change just outside the radius does not reach the centre pixel
    x = torch.randn(1, 2, 128, 128)
    with torch.no_grad():
        y0 = m(x)[0, :, 64, 64]
        x2 = x.clone()
        x2[0, :, 64 + radius + 1, :] += 5.0
        x2[0, :, :, 64 - radius - 1] += 5.0
        assert torch.equal(m(x2)[0, :, 64, 64], y0)
        # ... and the radius is reached: for some pixel of a pooling cell, a change at
        # distance exactly ``radius`` (row or column) does change its output
        y = m(x)
        reached = False
        for d in range(m.stride):
            for sign in (1, -1):
                x3 = x.clone()
                x3[0, :, 64 + d + sign * radius, :] += 5.0
                reached |= not torch.equal(m(x3)[0, :, 64 + d, :], y[0, :, 64 + d, :])
        assert reached


@pytest.mark.parametrize("s, r", ARCHS)
def test_tiled_inference_equals_whole_image(s, r):
    m = _net(space_to_depth=s, refine=r)
    _, radius = receptive_field(m)
    rng = np.random.default_rng(1)
    ny, nx = 157, 203                      # not multiples of the patch (or of 8)
    img = rng.normal(0, 1, (2, ny, nx)).astype(np.float32)
    img[:, 50:53, 80] += 40.0              # some structure
    x = np.stack([prepare_band(img[i], np.ones((ny, nx), np.float32)) for i in range(2)])
    tiled = predict_probs(m, x, patch=48, halo=radius, batch_size=5)
    halo = round_up(radius, m.stride)
    ey, ex = round_up(ny + 2 * halo, 8) - ny - 2 * halo, round_up(nx + 2 * halo, 8) - nx - 2 * halo
    pad = np.pad(x, ((0, 0), (0, 0), (halo, halo + ey), (halo, halo + ex)), mode="reflect")
    with torch.inference_mode():
        whole = torch.sigmoid(m(torch.from_numpy(pad))).numpy()[:, :, halo:halo + ny, halo:halo + nx]
    assert tiled.shape == (2, 7, ny, nx)
    assert np.abs(tiled - whole).max() < 1e-4
    # and a different tiling gives the same map
    other = predict_probs(m, x, patch=96, halo=radius + 8, batch_size=3)
    assert np.abs(other - tiled).max() < 1e-4


def test_fill_from_neighbours_hides_zeros():
    w = np.full((20, 20), 4.0, np.float32)
    w[:, 10] = 2.0
    w[5:8, 3] = 0.0
    filled = fill_from_neighbours(w, w == 0)
    assert (filled > 0).all() and filled[6, 3] == 4.0
    a = prepare_band(np.zeros((20, 20), np.float32), w)
    assert (a[1] > 0).all()


def test_model_roundtrip_and_checksum(tmp_path):
    m = _net(3)
    card = save_model(m, _card(m), tmp_path / "mdl")
    assert len(card["sha256"]) == 64 and card["n_params"] > 0
    m2, card2 = load_model(tmp_path / "mdl", build_masker)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert card2["sha256"] == card["sha256"]
    # corrupt the weights: refused, naming the file
    wpath = tmp_path / "mdl" / "weights.safetensors"
    data = bytearray(wpath.read_bytes())
    data[-1] ^= 0xFF
    wpath.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="weights.safetensors.*sha256"):
        load_masker(tmp_path / "mdl")
    # a card with another checksum: refused too
    m3 = _net(4)
    save_model(m3, _card(m3), tmp_path / "mdl2")
    c = json.loads((tmp_path / "mdl2" / "card.json").read_text())
    c["sha256"] = "0" * 64
    (tmp_path / "mdl2" / "card.json").write_text(json.dumps(c))
    with pytest.raises(ModelError, match="does not match"):
        load_masker(tmp_path / "mdl2")


def test_save_model_deterministic(tmp_path):
    m = _net(5)
    a = save_model(m, _card(m), tmp_path / "a")
    b = save_model(m, _card(m), tmp_path / "b")
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a" / "card.json").read_bytes() == (tmp_path / "b" / "card.json").read_bytes()


def test_select_device():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda")


def test_run_mask_with_model(tmp_path):
    m = _net(6)
    card = _card(m, thr=0.5)
    save_model(m, card, tmp_path / "mdl")
    cfg = validate_config({
        "survey": {"name": "t", "bands": ["g"], "pixel_scale": 0.262, "zeropoints": {"g": 22.5},
                   "files": {"image": {"pattern": "x/{tile}-{band}.fits"}}},
        "tiles": "t.tsv", "results": str(tmp_path / "res"),
        "mask": {"model": str(tmp_path / "mdl"), "patch": 64, "batch_size": 4, "device": "cpu",
                 "priors": {"cosmic_ray": 0.001}},
    })
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (1, 100, 130)).astype(np.float32)
    invvar = np.ones_like(image)
    dq = np.zeros(image.shape, np.uint16)
    dq[0, 7, 9] = bit("bad")
    store = Path(cfg["results"]) / "tiles" / "t1" / "tile.zarr"
    write_group(store, {})
    band = np.array(["g"], dtype=object)
    write_arrays(store, {n: xr.DataArray(a, dims=("band", "y", "x"), coords={"band": band})
                         for n, a in (("image", image), ("invvar", invvar), ("dq", dq))})
    run_mask(cfg, "t1")
    ds = open_tile(store)
    prob = ds["defect_prob"].values
    mask = ds["defect_mask"].values
    x = prepare_band(image[0], invvar[0])[None]
    raw = predict_probs(m, x, patch=64, halo=card["receptive_field"]["radius"])[0]
    # network bits: raw probability >= threshold; rule/dq bits carried
    for k, c in enumerate(DEFECT_CLASSES):
        np.testing.assert_array_equal((mask[0] >> k) & 1, (raw[k] >= 0.5).astype(np.uint16))
    assert mask[0, 7, 9] & bit("bad")
    # probabilities: uint8 of 255 p, cosmic rays prior-corrected (0.01 -> 0.001), others raw
    np.testing.assert_array_equal(prob[1:, 0], np.rint(raw[1:] * 255).astype(np.uint8))
    assert prob[0, 0].astype(int).sum() < np.rint(raw[0] * 255).sum()
    assert ds["defect_prob"].attrs["model_sha256"] == json.loads(
        (tmp_path / "mdl" / "card.json").read_text())["sha256"]


def test_prepare_constant_weight_map():
    """A constant weight map (no source noise in it) must not break the normalisation."""
    rng = np.random.default_rng(2)
    img = rng.normal(0, 0.01, (300, 300)).astype(np.float32)
    img[:, 100] += 0.07                               # a 7-sigma hot column
    iv = np.full(img.shape, 1e4, np.float32)
    iv[:, 100] = 0.0                                  # known upstream
    x = prepare_band(img, iv)
    assert np.isfinite(x).all()
    np.testing.assert_allclose(x[1], 1.0, atol=1e-6)
    assert np.median(x[0][:, 100]) > 2.0              # the column stands out in sigma units
    assert 0.72 < np.std(x[0][:, :90]) < 0.88           # std of arcsinh(N(0, 1)) = 0.80


@pytest.mark.parametrize("s, r", ARCHS)
def test_folded_batchnorm_gives_the_same_logits(s, r):
    """Inference copy with BatchNorm folded into the convolutions: same logits (to float
    rounding) with non-trivial BN statistics; the original is untouched."""
    m = _net(6, space_to_depth=s, refine=r)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.randn(mod.num_features, generator=g))
                mod.bias.copy_(torch.randn(mod.num_features, generator=g))
    m.eval()
    f = m.folded()
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in f.modules())
    assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    x = torch.randn(2, 2, 64, 64, generator=g)
    with torch.inference_mode():
        a, b = m(x), f(x)
    assert float((a - b).abs().max()) < 1e-4 * max(1.0, float(a.abs().max()))


@pytest.mark.parametrize("r", [0, 4])
def test_space_to_depth_is_per_pixel_and_round_trips_the_card(r):
    """With pixel unshuffle, every input pixel still gets its own logits: output shape
    equals input shape, and a change of one input pixel changes the output there (and
    the card's hyperparameters rebuild the same architecture)."""
    m = _net(3, space_to_depth=2, refine=r)
    assert m.stride == 8
    x = torch.randn(1, 2, 64, 64)
    with torch.inference_mode():
        y = m(x)
        x2 = x.clone()
        x2[0, 0, 33, 17] += 10.0
        d = (m(x2) - y).abs().sum(1)[0]
    assert y.shape == (1, len(DEFECT_CLASSES), 64, 64)
    assert float(d[33, 17]) > 0 and float(d[33, 17]) >= float(d.max()) * 1e-3
    rebuilt = build_masker(_card(m))
    assert rebuilt.stride == 8 and rebuilt.space_to_depth == 2 and rebuilt.refine == r
    rebuilt.load_state_dict(m.state_dict())
    with pytest.raises(ValueError, match="refine"):
        MaskNet(refine=4)  # a refinement only with space_to_depth > 1
