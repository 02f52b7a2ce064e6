"""The shipped masker on a real Legacy Survey DR6 coadd crop (tests/data/legacysurvey_dr6):
planted defects are found, a clean region stays clean, masks follow flips/rotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tilecat.bits import DEFECT_CLASSES
from tilecat.errors import ModelError

DATA = Path(__file__).parent / "data" / "legacysurvey_dr6"
#: A region of the brick fully inside the survey footprint with no source brighter than
#: ~5 sigma (rows, columns).
CLEAN = (slice(1536, 1792), slice(256, 768))
#: Inside CLEAN, rows/columns of a faint worm-shaped streak (8 px long, 2-3 sigma per
#: pixel, flanked by -2.5 sigma: the Lanczos ringing of a sharp feature resampled into
#: the coadd, most likely an unrejected cosmic-ray residual). A masker may flag it.
STREAK = (slice(241, 251), slice(166, 175))
NET = np.uint16((1 << len(DEFECT_CLASSES)) - 1)
K = {c: i for i, c in enumerate(DEFECT_CLASSES)}

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def masker():
    from tilecat.mask.model import load_masker

    try:
        return load_masker("default")
    except ModelError as exc:  # pragma: no cover - before the model is trained
        pytest.skip(f"no shipped masker: {exc}")


@pytest.fixture(scope="module")
def crop():
    from astropy.io import fits

    img = fits.getdata(DATA / "legacysurvey-0959p805-image-g.fits.fz")[CLEAN].astype(np.float32)
    iv = fits.getdata(DATA / "legacysurvey-0959p805-invvar-g.fits.fz")[CLEAN].astype(np.float32)
    assert (iv > 0).all()
    return img, iv


def _run(masker, img, iv):
    from tilecat.mask.run import mask_arrays

    model, card = masker
    cfg = {"patch": 256, "batch_size": 4, "halo": None, "priors": {}}
    prob, mask = mask_arrays(img[None], iv[None], None, cfg, model, card)
    return prob[:, 0], mask[0]


def _plant(img, iv):
    """Cosmic ray, satellite trail and hot column planted into a copy; returns their truth."""
    sigma = float(np.median(1 / np.sqrt(iv)))
    out = img.copy()
    ny, nx = img.shape
    cr = np.zeros(img.shape, bool)
    for k, (y, x) in enumerate([(60, 100), (61, 101), (61, 102), (62, 103)]):
        out[y, x] += sigma * (60 - 10 * k)
        cr[y, x] = True
    out[200, 40] += 80 * sigma                       # single-pixel hit
    cr[200, 40] = True
    single = np.zeros(img.shape, bool)
    single[200, 40] = True
    trail = np.zeros(img.shape, bool)
    yy, xx = np.mgrid[:ny, :nx]
    d = np.abs((yy - 20) - 0.35 * xx) / np.hypot(1, 0.35)   # line y = 20 + 0.35 x
    profile = 4.0 * sigma * np.exp(-0.5 * (d / 1.2) ** 2)
    out += profile.astype(np.float32)
    trail[d < 1.0] = True
    col = np.zeros(img.shape, bool)
    out[30:230, 400] += 6 * sigma
    col[30:230, 400] = True
    return out, {"cosmic_ray": cr, "single": single, "trail": trail, "hot": col}


def test_clean_region_stays_clean(masker, crop):
    img, iv = crop
    _, mask = _run(masker, img, iv)
    net = mask & NET
    net[STREAK] = 0
    assert np.count_nonzero(net) <= 5, np.count_nonzero(net)


def test_planted_defects_found(masker, crop):
    from scipy import ndimage

    img, iv = crop
    planted, truth = _plant(img, iv)
    prob, mask = _run(masker, planted, iv)
    net = mask & NET
    # the isolated one-pixel hit is, in a single image, indistinguishable from a hot
    # pixel: either bit masks it; the 4-pixel track must be a cosmic ray
    cr_bit = np.where(truth["single"], (1 << K["cosmic_ray"]) | (1 << K["hot"]),
                      1 << K["cosmic_ray"]).astype(np.uint16)
    cr_found = (net & cr_bit)[truth["cosmic_ray"]] > 0
    assert cr_found.mean() >= 0.8
    trail_found = (net[truth["trail"]] & (1 << K["trail"])) > 0
    assert trail_found.mean() >= 0.5
    col_found = (net[truth["hot"]] & ((1 << K["hot"]) | (1 << K["dead"]))) > 0
    assert col_found.mean() >= 0.5
    near = ndimage.binary_dilation(truth["cosmic_ray"] | truth["trail"] | truth["hot"],
                                   iterations=3)
    near[STREAK] = True
    assert np.count_nonzero(net[~near]) <= 5
    assert prob.dtype == np.uint8


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7])
def test_masks_follow_flips_and_rotations(masker, crop, k):
    """Flipping/rotating the image flips/rotates the masks (the network is trained with
    dihedral augmentation, so equivariance is approximate, at the edges of defects)."""
    from scipy import ndimage

    img, iv = crop
    planted, truth = _plant(img, iv)
    planted, iv = planted[:, :256], iv[:, :256]          # square: rotations keep the shape

    def tf(a):
        a = np.flip(a, axis=-1) if k >= 4 else a
        return np.ascontiguousarray(np.rot90(a, k % 4, axes=(-2, -1)))

    p0, m0 = _run(masker, planted, iv)
    p1, m1 = _run(masker, tf(planted), tf(iv))
    # probabilities agree to ~1/255 on average in every class
    dp = np.abs(tf(p0).astype(int) - p1.astype(int)).mean(axis=(1, 2))
    assert dp.max() <= 2.0, dp
    # flagged pixels agree within one pixel
    a, b = tf(m0 & NET) > 0, (m1 & NET) > 0
    ring = np.ones((3, 3), bool)
    assert (a & ndimage.binary_dilation(b, ring)).sum() >= 0.8 * a.sum()
    assert (b & ndimage.binary_dilation(a, ring)).sum() >= 0.8 * b.sum()
    # and the planted cosmic ray and trail are flagged in both orientations
    for name in ("cosmic_ray", "trail"):
        t = tf(truth[name][:, :256])
        bitv = 1 << K[name]
        assert ((m1[t] & bitv) > 0).mean() >= 0.5, name


DECAM = Path(__file__).parent / "data" / "decam_cp" / "c4d_181104_072440_{}_g_ls9.S4.fits"


def test_planted_dead_column_found_in_raw_decam(masker):
    """A dead column collects no charge: in a DECam CP image (ADU, sky still in) it
    reads 0 plus read noise, far below the sky. Planted into the real crop (sky ~262
    ADU, sigma ~8 ADU; one column clear of the star, one across its halo) the masker
    flags it dead, and adds no dead flags elsewhere."""
    from astropy.io import fits

    with fits.open(str(DECAM).format("ooi")) as h:
        img = h[1].data.astype(np.float32)
        read_adu = float(h[1].header["RDNOISEA"]) / float(h[1].header["GAINA"])
    iv = fits.getdata(str(DECAM).format("oow")).astype(np.float32)
    rng = np.random.default_rng(0)
    truth = np.zeros(img.shape, bool)
    truth[:, 6] = True                    # whole column, on sky
    truth[55:, 80] = True                 # from row 55 to the edge, across the star's halo
    truth[[12, 30, 90], [95, 70, 25]] = True   # isolated dead pixels
    planted = img.copy()
    planted[truth] = (read_adu * rng.standard_normal(truth.sum())).astype(np.float32)
    _, mask = _run(masker, planted, iv)
    dead = (mask & (1 << K["dead"])) > 0
    assert dead[truth].mean() >= 0.9, dead[truth].mean()
    from scipy import ndimage

    near = ndimage.binary_dilation(truth, iterations=1)
    assert np.count_nonzero(dead & ~near) <= 3
    # the unplanted crop: no dead flags at all
    _, mask0 = _run(masker, img, iv)
    assert np.count_nonzero(mask0 & (1 << K["dead"])) <= 3
