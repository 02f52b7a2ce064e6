"""Tests of tilecat.simulate.defects (defect injection with pixel-exact truth)."""

from __future__ import annotations

import numpy as np
import pytest

from tilecat.bits import DEFECT_CLASSES, bit
from tilecat.errors import ConfigError
from tilecat.simulate.defects import (
    TRUTH_THRESHOLD_SIGMA,
    DefectRates,
    inject_defects,
)

SIGMA = 0.01
SKY = 0.6        # sky level subtracted from the image (60 sigma)
READ = 0.002     # read noise (flux units)
SAT = 50.0
SHAPE = (300, 280)


def _scene(seed: int = 0, star: bool = True) -> tuple[np.ndarray, np.ndarray, list]:
    rng = np.random.default_rng(seed)
    img = (SIGMA * rng.standard_normal(SHAPE)).astype(np.float32)
    stars = []
    if star:
        yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
        xs, ys = 140.3, 150.6
        img += (20000.0 * np.exp(-0.5 * ((xx - xs) ** 2 + (yy - ys) ** 2) / 1.5**2)
                / (2 * np.pi * 1.5**2)).astype(np.float32)
        stars.append((xs, ys))
    iv = np.full(SHAPE, 1.0 / SIGMA**2, np.float32)
    return img, iv, stars


HEAVY = DefectRates(cosmic_ray_per_mpix=800, hot_pixel_per_mpix=300, hot_column_per_tile=2,
                    dead_pixel_per_mpix=300, dead_column_per_tile=2, trail_per_tile=2,
                    persistence_per_tile=3)


def _inject(seed: int, rates: DefectRates = HEAVY, star: bool = True):
    img, iv, stars = _scene(seed, star)
    res = inject_defects(img, iv, np.random.default_rng(seed + 100), rates, pixscale=0.262,
                         sky_sigma=SIGMA, sky_level=SKY, read_sigma=READ, saturation_level=SAT, psf_fwhm_pix=4.0,
                         bright_star_xy=stars)
    return img, iv, res


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_truth_covers_changed_pixels(seed):
    img, iv, res = _inject(seed)
    assert res.image.dtype == np.float32 and res.truth.dtype == np.uint16
    assert res.dq.dtype == np.uint16 and res.invvar.dtype == np.float32
    diff = np.abs(res.image.astype(np.float64) - img)
    unmarked = res.truth == 0
    # only sub-threshold tails (charge sharing, trail wings, ghost outskirts) may be unmarked
    assert diff[unmarked].max() < TRUTH_THRESHOLD_SIGMA * SIGMA * 1.0001
    # and most changed pixels are marked
    changed = diff > 1e-6
    assert (res.truth[changed] != 0).mean() > 0.5
    assert res.counts["cosmic_ray"] > 10
    for name in ("cosmic_ray", "hot", "dead", "saturated", "bleed"):
        assert (res.truth & bit(name)).any(), name
    # truth uses defect-class bits only
    allowed = sum(bit(n) for n in DEFECT_CLASSES)
    assert not (res.truth & ~np.uint16(allowed)).any()


def test_dq_holds_only_upstream_knowledge():
    for seed in range(4):
        _, _, res = _inject(seed)
        allowed = bit("bad") | bit("saturated") | bit("nodata")
        assert not (res.dq & ~np.uint16(allowed)).any()
        # saturation is known upstream: dq and truth agree on it
        np.testing.assert_array_equal(res.dq & bit("saturated"), res.truth & bit("saturated"))
        # known bad pixels are truly defective and carry zero weight
        bad = (res.dq & bit("bad")) != 0
        assert bad.any()
        assert ((res.truth[bad] & (bit("dead") | bit("hot"))) != 0).all()
        assert (res.invvar[bad] == 0).all()
        # not every static defect is known (the masker must find the rest)
        static = (res.truth & (bit("dead") | bit("hot"))) != 0
        assert (static & ~bad).any()
        # invvar untouched elsewhere
        assert (res.invvar[~bad] == np.float32(1.0 / SIGMA**2)).all()


def test_deterministic():
    _, _, a = _inject(7)
    _, _, b = _inject(7)
    for name in ("image", "invvar", "truth", "dq"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    _, _, c = _inject(8)
    assert not np.array_equal(a.truth, c.truth)


def test_zero_rates_change_nothing():
    img, iv, _ = _scene(3, star=False)
    res = inject_defects(img, iv, np.random.default_rng(0), DefectRates.none(), pixscale=0.262,
                         sky_sigma=SIGMA, sky_level=SKY, read_sigma=READ, saturation_level=SAT, psf_fwhm_pix=4.0)
    np.testing.assert_array_equal(res.image, img)
    np.testing.assert_array_equal(res.invvar, iv)
    assert not res.truth.any() and not res.dq.any()


def test_saturation_clips_and_bleed_conserves_charge():
    img, iv, stars = _scene(5)
    total_in = float(img.astype(np.float64).sum())
    assert img.max() > SAT * 5
    res = inject_defects(img, iv, np.random.default_rng(1), DefectRates.none(), pixscale=0.262,
                         sky_sigma=SIGMA, sky_level=SKY, read_sigma=READ, saturation_level=SAT, psf_fwhm_pix=4.0,
                         bright_star_xy=stars)
    assert res.image.max() <= np.float32(SAT)
    sat = (res.truth & bit("saturated")) != 0
    bleed = (res.truth & bit("bleed")) != 0
    assert sat.sum() > 1 and bleed.sum() > 2
    # bleed runs along the star's column(s), above and below the core
    rows, cols = np.nonzero(bleed)
    assert set(cols) <= set(range(135, 146))
    assert rows.min() < 150 < rows.max()
    np.testing.assert_allclose(float(res.image.astype(np.float64).sum()), total_in, rtol=1e-5)
    assert (res.dq[sat] & bit("saturated")).all()


def test_rates_from_dict_and_validation():
    r = DefectRates.from_dict({"cosmic_ray_per_mpix": 5, "trail_per_tile": 0})
    assert r.cosmic_ray_per_mpix == 5.0 and r.trail_per_tile == 0.0
    assert r.hot_pixel_per_mpix == DefectRates().hot_pixel_per_mpix
    assert DefectRates.coadd().cosmic_ray_per_mpix < DefectRates().cosmic_ray_per_mpix
    with pytest.raises(ConfigError, match="unknown"):
        DefectRates.from_dict({"cosmic_rays": 1})
    with pytest.raises(ConfigError):
        DefectRates.from_dict({"trail_per_tile": -1})
    with pytest.raises(ConfigError):
        DefectRates.from_dict({"known_bad_fraction": 2})


def test_cosmic_rays_are_sharp_and_in_truth_only():
    img, iv, _ = _scene(9, star=False)
    rates = DefectRates.none().__class__(cosmic_ray_per_mpix=500, hot_pixel_per_mpix=0,
                                         hot_column_per_tile=0, dead_pixel_per_mpix=0,
                                         dead_column_per_tile=0, trail_per_tile=0,
                                         persistence_per_tile=0)
    res = inject_defects(img, iv, np.random.default_rng(2), rates, pixscale=0.262,
                         sky_sigma=SIGMA, sky_level=SKY, read_sigma=READ, saturation_level=np.inf, psf_fwhm_pix=4.0)
    cr = (res.truth & bit("cosmic_ray")) != 0
    assert cr.any() and not res.dq.any()
    kinds = {k: v for k, v in res.counts.items() if k.startswith("cosmic_ray_")}
    assert kinds["cosmic_ray_point"] > 0 and kinds["cosmic_ray_worm"] > 0
    # sharp: the brightest CR pixel stands far above its 8 neighbours' mean
    delta = res.image.astype(np.float64) - img
    y, x = np.unravel_index(np.argmax(delta), delta.shape)
    y0, x0 = max(y - 1, 0), max(x - 1, 0)
    box = delta[y0:y + 2, x0:x + 2]
    assert delta[y, x] > 2 * (box.sum() - delta[y, x]) / (box.size - 1)


def test_dead_pixels_collect_no_charge():
    """A dead pixel/column collects neither sky nor sources: in the sky-subtracted
    image it reads -sky (plus read noise), far below the background."""
    img, iv, stars = _scene(4)
    rates = DefectRates.none().__class__(
        cosmic_ray_per_mpix=0, hot_pixel_per_mpix=0, hot_column_per_tile=0,
        dead_pixel_per_mpix=2000, dead_column_per_tile=3, trail_per_tile=0,
        persistence_per_tile=0)
    res = inject_defects(img, iv, np.random.default_rng(3), rates, pixscale=0.262,
                         sky_sigma=SIGMA, sky_level=SKY, read_sigma=READ, saturation_level=SAT,
                         psf_fwhm_pix=4.0, bright_star_xy=stars)
    dead = (res.truth & bit("dead")) != 0
    assert res.counts["dead_pixel"] > 50 and res.counts["dead_column"] > 0
    assert dead.sum() > res.counts["dead_pixel"]          # columns too
    v = res.image[dead].astype(np.float64) + SKY
    assert abs(v.mean()) < 3 * READ / np.sqrt(v.size) + 1e-6
    assert 0.8 * READ < v.std() < 1.2 * READ
    # even on the bright star the dead pixels read -sky
    assert res.image[dead].max() < -SKY + 6 * READ
    # without read noise exactly -sky
    res0 = inject_defects(img, iv, np.random.default_rng(3), rates, pixscale=0.262,
                          sky_sigma=SIGMA, sky_level=SKY, saturation_level=SAT,
                          psf_fwhm_pix=4.0, bright_star_xy=stars)
    np.testing.assert_array_equal(res0.image[dead], np.float32(-SKY))
    with pytest.raises(ValueError, match="sky_level"):
        inject_defects(img, iv, 0, rates, pixscale=0.262, sky_sigma=SIGMA, sky_level=-1.0,
                       saturation_level=SAT, psf_fwhm_pix=4.0)


def test_persistence_ghosts_are_thresholded_residuals():
    """Ghosts of a star saturated in the previous exposure: compact support (exactly 0
    where the previous fluence was below threshold), a plateau of at most 8 sky sigmas
    over the saturated core, and a column-aligned ghost of its bleed trail."""
    from tilecat.simulate.defects import _persistence_ghost

    rng = np.random.default_rng(11)
    shape = (200, 200)
    elongated = flat = 0
    for _ in range(40):
        layer = _persistence_ghost(rng, shape, SIGMA, 4.0, [])
        assert layer.dtype == np.float32 and (layer >= 0).all()
        assert layer.max() <= 8 * SIGMA * 1.0001
        on = layer > 0
        if not on.any():
            continue
        # compact support: far fewer lit pixels than the image, nothing but the ghost
        assert on.sum() < 0.5 * layer.size
        # flat top: a saturated core sits at the plateau (pixels equal to the maximum)
        flat += np.count_nonzero(layer >= layer.max() * 0.999) >= 3
        rows = np.nonzero(on.any(axis=1))[0]
        cols = np.nonzero(on.any(axis=0))[0]
        if np.ptp(rows) > 2 * np.ptp(cols):
            elongated += 1                    # a bleed-trail ghost runs along the columns
    assert elongated >= 5 and flat >= 20
    # deterministic
    a = _persistence_ghost(np.random.default_rng(5), shape, SIGMA, 4.0, [(100.0, 100.0)])
    b = _persistence_ghost(np.random.default_rng(5), shape, SIGMA, 4.0, [(100.0, 100.0)])
    np.testing.assert_array_equal(a, b)
