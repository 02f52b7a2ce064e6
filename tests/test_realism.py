"""Tests of tilecat.simulate.realism (noise, counts and size figures)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from tilecat.simulate.realism import (
    MAG_BINS,
    comparison_table,
    count_density,
    depth_from_sigma,
    measure_image,
    moffat_fwhm_from_r50,
    noise_stats,
)


def _scene(correlated: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sigma = 0.01
    noise = rng.standard_normal((400, 400))
    if correlated:  # resampling-like correlation, weight map unaware of it
        noise = ndi.uniform_filter(noise, 2) * 2.0
    img = sigma * noise
    yy, xx = np.mgrid[:400, :400]
    for k in range(30):
        x, y = rng.uniform(20, 380, 2)
        f = 10 ** rng.uniform(0, 2)  # nanomaggies
        s = 1.5
        img += f * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / s**2) / (2 * np.pi * s**2)
    return img, np.full(img.shape, 1 / sigma**2)


def test_white_noise_figures():
    rng = np.random.default_rng(1)
    img = rng.normal(0, 2.0, (300, 300))
    st = noise_stats(img, np.full(img.shape, 2.0), np.ones(img.shape, bool))
    assert st["pull_width"] == pytest.approx(1.0, abs=0.02)
    assert st["kurtosis"] == pytest.approx(0.0, abs=0.1)
    assert st["corr_ratio"] == pytest.approx(1.0, abs=0.05)
    assert st["sigma"] == pytest.approx(2.0, rel=0.02)


def test_measure_image_white_vs_correlated():
    img, iv = _scene(False)
    a = measure_image("white", img, 0.262, iv)
    img2, iv2 = _scene(True)
    b = measure_image("corr", img2, 0.262, iv2)
    assert a.noise["pull_width"] == pytest.approx(1.0, abs=0.05)
    assert b.noise["corr_ratio"] > 1.3 and a.noise["corr_ratio"] < 1.1
    # the 30 injected sources are found (plus at most a few noise peaks)
    assert 25 <= a.n_sources <= 45
    area = 400 * 400 * (0.262 / 3600) ** 2
    assert a.area_deg2 == pytest.approx(area, rel=1e-6)
    assert a.counts.shape == (len(MAG_BINS) - 1,)
    # all sources are Gaussians of sigma 1.5 px: r50 = 1.177 sigma = 0.46"
    assert a.r50_q["q50"] == pytest.approx(1.177 * 1.5 * 0.262, rel=0.15)
    text = comparison_table([a, b])
    assert "pull width" in text and "white" in text
    figs = a.figures()
    assert set(figs) >= {"pull_width", "kurtosis", "counts_per_deg2_mag", "r50_arcsec"}


def test_count_density_and_conversions():
    mags = np.array([20.5, 20.6, 21.2, np.nan])
    c = count_density(mags, 0.5)
    assert c[list(MAG_BINS).index(20.0)] == pytest.approx(4.0)
    assert c[list(MAG_BINS).index(21.0)] == pytest.approx(2.0)
    fwhm = moffat_fwhm_from_r50(1.0, 3.0)
    assert 1.3 < fwhm < 2.0
    # round trip with the simulator's own depth -> sigma relation
    from tilecat.simulate.conditions import moffat_nea_arcsec2

    sigma = 10 ** (-0.4 * (24.0 - 22.5)) / (5 * np.sqrt(moffat_nea_arcsec2(1.2, 3.0) / 0.262**2))
    assert depth_from_sigma(sigma, 1.2, 3.0, 0.262) == pytest.approx(24.0, abs=1e-9)
