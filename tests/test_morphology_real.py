"""Spin equivariance of the shipped morphology model on real galaxies (Legacy Survey DR6).

The brick in tests/data has the g band only: each real stamp is given to the four-band
model as g in every band. That says nothing about accuracy, but the property under test
(a mirrored galaxy gets S and Z swapped, every other answer unchanged) must hold for any
input, and real light profiles, noise and neighbours are what the pipeline feeds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sep = pytest.importorskip("sep")

DATA = Path(__file__).parent / "data" / "legacysurvey_dr6"


def _real_stamps(n: int = 12, size: int = 64) -> np.ndarray:
    from astropy.io import fits

    from tilecat.normalize import asinh_norm

    with fits.open(DATA / "legacysurvey-0959p805-image-g.fits.fz") as h:
        img = np.asarray(h[1].data, np.float64)
    with fits.open(DATA / "legacysurvey-0959p805-invvar-g.fits.fz") as h:
        iv = np.asarray(h[1].data, np.float64)
    sigma = float(np.median(1 / np.sqrt(iv[iv > 0])))
    data = np.ascontiguousarray(np.where(iv > 0, img, 0.0))
    objs = sep.extract(data, 5.0, err=sigma, minarea=20)
    h = size // 2
    ok = ((objs["x"] > h) & (objs["x"] < data.shape[1] - h) & (objs["y"] > h)
          & (objs["y"] < data.shape[0] - h) & (objs["a"] > 2.0))
    objs = objs[ok][np.argsort(-objs[ok]["flux"])][:n]
    stamps = []
    for o in objs:
        x, y = int(round(o["x"])), int(round(o["y"]))
        cut = data[y - h:y + h, x - h:x + h]
        stamps.append(np.repeat(asinh_norm(cut, sigma)[None], 4, axis=0))
    return np.asarray(stamps, np.float32)


def test_shipped_morphology_spin_swap_on_real_galaxies():
    from tilecat.infer.registry import get_head
    from tilecat.morphology.tree import answer_slices, mirror_permutation

    stamps = _real_stamps()
    assert len(stamps) >= 8, "the DR6 brick should give at least 8 resolved objects"
    head = get_head("morphology")
    lh = head.load({"survey": {"pixel_scale": 0.262}, "infer": {}}, torch.device("cpu"))
    x = torch.from_numpy(stamps)
    extra = [torch.full((len(x), 4), 1.3) for k in lh.inputs if k == "psf_fwhm"]
    with torch.inference_mode():
        p = lh.module(x, *extra).numpy()
        pm = lh.module(x.flip(-1).contiguous(), *extra).numpy()
    np.testing.assert_allclose(pm, p[:, mirror_permutation()], atol=1e-6)
    s = answer_slices()["spin"]
    np.testing.assert_allclose(pm[:, s.start], p[:, s.start + 1], atol=1e-6)
    # real galaxies are not mirror symmetric: the spin answer is not stuck at 1/2
    assert np.abs(p[:, s.start] - 0.5).max() > 1e-3
    for sl in answer_slices().values():
        np.testing.assert_allclose(p[:, sl].sum(1), 1.0, rtol=1e-5)
