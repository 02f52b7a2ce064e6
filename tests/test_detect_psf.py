"""PSF shape (Moffat FWHM, beta) per band from a tile's stars (tilecat.detect.psf)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from tilecat.bits import bit
from tilecat.detect.psf import BETA_RANGE, PSFEstimate, estimate_psf, moffat_r50, select_stars

galsim = pytest.importorskip("galsim")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
PIX = 0.262  # arcsec / pixel
FWHM = 1.2  # arcsec
SIZE = 512
NOISE = 0.05  # sky noise per pixel (flux units)
GAIN = 50.0  # electrons per flux unit (source Poisson noise)


def _field(beta: float, seed: int, n_star: int = 40, n_gal: int = 60,
           n_saturated: int = 3) -> dict:
    """A background-free image of Moffat stars and PSF-convolved Sersic galaxies.

    Stars and galaxies are drawn with GalSim as the effective PSF (``no_pixel``);
    noise is sky + source Poisson, and ``sigma`` is its true per-pixel value. The
    last ``n_saturated`` stars are bright and carry the ``saturated`` bit on their
    cores (they must not be used).
    """
    rng = np.random.default_rng(seed)
    img = galsim.ImageF(SIZE, SIZE, scale=PIX)
    psf = galsim.Moffat(beta=beta, fwhm=FWHM)
    stars = []
    for k in range(n_star + n_saturated):
        flux = 10 ** rng.uniform(1.0, 3.0) if k < n_star else 3e4
        x, y = rng.uniform(20, SIZE - 20, 2)
        psf.withFlux(flux).drawImage(image=img, add_to_image=True, method="no_pixel",
                                     center=galsim.PositionD(x + 1, y + 1))
        stars.append((x, y))
    for _ in range(n_gal):
        gal = galsim.Sersic(n=float(rng.choice([1.0, 4.0])),
                            half_light_radius=rng.uniform(0.3, 2.0),
                            flux=10 ** rng.uniform(0.7, 2.5))
        gal = gal.shear(q=rng.uniform(0.3, 1.0), beta=rng.uniform(0, 180) * galsim.degrees)
        x, y = rng.uniform(20, SIZE - 20, 2)
        galsim.Convolve(gal, psf).drawImage(image=img, add_to_image=True, method="no_pixel",
                                            center=galsim.PositionD(x + 1, y + 1))
    model = img.array.astype(np.float64)
    sigma = np.sqrt(NOISE**2 + np.maximum(model, 0.0) / GAIN)
    image = (model + rng.normal(size=model.shape) * sigma).astype(np.float32)
    bits = np.zeros(image.shape, np.uint16)
    for x, y in stars[n_star:]:
        cy, cx = int(round(y)), int(round(x))
        bits[cy - 2:cy + 3, cx - 2:cx + 3] |= np.uint16(bit("saturated"))
    return {"image": image, "sigma": sigma.astype(np.float32), "bits": bits,
            "stars": np.array(stars[:n_star]), "saturated": np.array(stars[n_star:])}


def _detect(f: dict) -> dict:
    """Sources of a field as the detect stage finds them (sep, AUTO S/N)."""
    import sep

    from tilecat.detect.background import estimate_background
    from tilecat.detect.extract import extract_sources
    from tilecat.detect.photometry import auto_apertures, auto_flux

    bad = np.zeros(f["image"].shape, bool)
    image = f["image"] - estimate_background(f["image"], bad, 64, 3).back
    ext = extract_sources(image, f["sigma"], bad, thresh=1.5, minarea=5)
    obj = ext.objects
    aper = auto_apertures(image, obj, ext.segmap)
    flux, ferr, _ = auto_flux(image, aper, err=f["sigma"], segmap=ext.segmap)
    return {"image": image, "bad": bad, "segmap": ext.segmap, "x": obj["x"], "y": obj["y"],
            "snr": flux / ferr,
            "exclude": (obj["flag"] & sep.OBJ_TRUNC) != 0}


def _r50_within(fwhm: float, beta: float, rmax: float) -> float:
    """Radius holding half the flux inside ``rmax`` of a Moffat (``sep.flux_radius``)."""
    from tilecat.detect.psf import moffat_alpha

    a = moffat_alpha(fwhm, beta)
    q = 1.0 - 0.5 * (1.0 - (1.0 + (rmax / a) ** 2) ** (1.0 - beta))
    return a * math.sqrt(q ** (1.0 / (1.0 - beta)) - 1.0)


def _estimate(f: dict, d: dict, **kw) -> PSFEstimate:
    return estimate_psf(d["image"], f["sigma"], d["bad"], f["bits"], d["segmap"], d["x"],
                        d["y"], d["snr"], PIX, exclude=d["exclude"], **kw)


@pytest.fixture(scope="module", params=[2.0, 4.0])
def field(request: pytest.FixtureRequest) -> dict:
    f = _field(request.param, seed=1)
    return {"beta": request.param, "f": f, "d": _detect(f)}


def test_moffat_half_light_radius_matches_galsim() -> None:
    for beta in (1.5, 2.5, 4.0, 8.0):
        want = galsim.Moffat(beta=beta, fwhm=1.0).half_light_radius
        assert moffat_r50(1.0, beta) == pytest.approx(want, rel=1e-6)


def test_beta_and_fwhm_recovered(field: dict) -> None:
    """FWHM held at the header value: beta within 0.15; free fit within 3 % / 0.15."""
    est = _estimate(field["f"], field["d"], fwhm_arcsec=FWHM)
    assert est.source == "stars"
    assert est.n_stars >= 10
    assert est.fwhm_arcsec == FWHM
    assert abs(est.beta - field["beta"]) < 0.15, est
    assert abs(est.fwhm_fit_arcsec / FWHM - 1.0) < 0.03, est
    assert abs(est.beta_fit - field["beta"]) < 0.15, est


def test_no_header_fwhm(field: dict) -> None:
    """Without a header FWHM the free fit gives both FWHM and beta."""
    est = _estimate(field["f"], field["d"], fwhm_arcsec=None)
    assert est.source == "stars"
    assert est.fwhm_arcsec == est.fwhm_fit_arcsec
    assert abs(est.fwhm_arcsec / FWHM - 1.0) < 0.03, est
    assert abs(est.beta - field["beta"]) < 0.15, est


def test_selection_is_stars_only(field: dict) -> None:
    """The selected sources are true stars (galaxies and saturated stars left out)."""
    f, d = field["f"], field["d"]
    sel = select_stars(d["image"], d["bad"], f["bits"], d["segmap"], d["x"], d["y"],
                       d["snr"], d["exclude"], fwhm_pix=FWHM / PIX)
    assert sel.index.size >= 10
    xs, ys = d["x"][sel.index], d["y"][sel.index]
    dist = np.hypot(xs[:, None] - f["stars"][None, :, 0], ys[:, None] - f["stars"][None, :, 1])
    assert (dist.min(axis=1) < 1.0).mean() >= 0.9
    dsat = np.hypot(xs[:, None] - f["saturated"][None, :, 0],
                    ys[:, None] - f["saturated"][None, :, 1])
    assert dsat.min() > 3.0
    # select_stars measures radii within 3 FWHMs
    assert sel.r50_locus == pytest.approx(_r50_within(FWHM / PIX, field["beta"], 3 * FWHM / PIX),
                                          rel=0.03)


def test_deterministic(field: dict) -> None:
    a = _estimate(field["f"], field["d"], fwhm_arcsec=FWHM)
    b = _estimate(field["f"], field["d"], fwhm_arcsec=FWHM)
    assert a == b


def test_too_few_stars_gives_default() -> None:
    f = _field(3.0, seed=2, n_star=3, n_gal=40, n_saturated=1)
    d = _detect(f)
    est = _estimate(f, d, fwhm_arcsec=FWHM, beta_default=2.7, min_stars=5)
    assert est.source == "default"
    assert est.beta == 2.7 and est.n_stars < 5
    assert est.fwhm_arcsec == FWHM and math.isnan(est.fwhm_fit_arcsec)
    attrs = est.as_attrs()
    assert attrs == {"fwhm": FWHM, "beta": 2.7, "n_stars": est.n_stars, "source": "default",
                     "fwhm_fit": None, "beta_fit": None}
    # no sources at all, and no header FWHM
    empty = np.zeros(0)
    est = estimate_psf(d["image"], f["sigma"], d["bad"], f["bits"], d["segmap"], empty, empty,
                       empty, PIX, beta_default=3.5)
    assert (est.source, est.beta, est.n_stars) == ("default", 3.5, 0)
    assert est.as_attrs()["fwhm"] is None


def test_beta_clipped_to_range() -> None:
    """A Moffat with beta far above the range (nearly Gaussian) reports the upper limit."""
    f = _field(30.0, seed=3, n_star=30, n_gal=0, n_saturated=0)
    est = _estimate(f, _detect(f), fwhm_arcsec=FWHM)
    assert est.source == "stars" and est.beta == BETA_RANGE[1]


# ---------------------------------------------------------------- simulated survey tile


def test_simulated_tile_beta_matches_header(tmp_path: Path) -> None:
    """``tilecat simulate`` -> ingest -> detect: measured beta vs the PSFBETA header."""
    import yaml
    from astropy.io import fits

    from tilecat.config import validate_config
    from tilecat.detect import run_detect
    from tilecat.ingest import run_ingest
    from tilecat.simulate.config import load_sim_config
    from tilecat.simulate.survey import simulate_survey
    from tilecat.store import read_attrs
    from tilecat.survey import tile_paths

    sim = load_sim_config(None, overrides={
        "seed": 3, "tiles": 1, "stars": {"density": 25.0},
        "survey": {"name": "psf", "bands": ["g", "r", "i", "z"], "tile_size": 512}})
    data = tmp_path / "data"
    (tile,) = simulate_survey(sim, data)
    survey = yaml.safe_load((data / "survey.yaml").read_text())["survey"]
    for ref in survey["files"].values():
        ref["pattern"] = str(data / "{tile}" / Path(ref["pattern"]).name)
    cfg = validate_config({"survey": survey, "tiles": str(data / "tiles.tsv"),
                           "results": str(tmp_path / "results")})
    run_ingest(cfg, tile)
    run_detect(cfg, tile, 0)
    psf = read_attrs(tile_paths(cfg, tile)["cutouts"])["psf"]
    assert list(psf) == ["g", "r", "i", "z"]
    measured = 0
    for band, entry in psf.items():
        hdr = fits.getheader(next((data / tile).glob(f"{tile}-{band}.fits*")), "IMAGE")
        assert entry["fwhm"] == pytest.approx(hdr["PSFFWHM"], rel=1e-5)
        if entry["source"] == "stars":
            measured += 1
            assert abs(entry["beta"] - hdr["PSFBETA"]) < 0.2, (band, entry, hdr["PSFBETA"])
            assert abs(entry["fwhm_fit"] / hdr["PSFFWHM"] - 1) < 0.03, (band, entry)
    assert measured >= 3


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_decam_crop_saturated_star_only_gives_default(tmp_path: Path) -> None:
    """The DECam CP crop holds one saturated star with bleed trails and nothing else
    bright: no usable PSF star, so the default beta with the header FWHM (4.93 px)."""
    import yaml

    from tilecat.config import validate_config
    from tilecat.detect import run_detect
    from tilecat.ingest import run_ingest
    from tilecat.store import read_attrs
    from tilecat.survey import tile_paths

    cfg = yaml.safe_load((DATA / "ingest_decam.yaml").read_text())
    for ref in cfg["survey"]["files"].values():
        ref["pattern"] = str(ROOT / ref["pattern"])
    cfg["tiles"] = str(ROOT / cfg["tiles"])
    cfg["results"] = str(tmp_path / "results")
    cfg["detect"] = {"psf_beta_default": 2.5}
    cfg = validate_config(cfg)
    tile = "181104_072440"
    run_ingest(cfg, tile)
    run_detect(cfg, tile, 2)
    attrs = read_attrs(tile_paths(cfg, tile)["cutouts"])
    g = attrs["psf"]["g"]
    assert g["source"] == "default" and g["beta"] == 2.5 and g["n_stars"] == 0
    assert g["fwhm"] == pytest.approx(4.925741 * 0.262, rel=1e-5)
    assert "Moffat" in attrs["psf_model"]


@pytest.mark.realdata
def test_legacy_survey_coadd_g_band() -> None:
    """Legacy Survey DR6 brick 0959p805, g (BASS 90Prime coadd, no PSF keyword).

    The free fit gives a plausible beta and FWHM from many stars, and the fitted
    profile's half-light radius equals the model-free one of the selected stars
    (``sep.flux_radius`` within 15 pixels, as the selection measures it) within 3 %.
    """
    import sep
    from astropy.io import fits

    from tilecat.detect.background import estimate_background
    from tilecat.detect.extract import extract_sources
    from tilecat.detect.photometry import auto_apertures, auto_flux

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = fits.getdata(DATA / "legacysurvey_dr6" / "legacysurvey-0959p805-image-g.fits.fz")
        ivar = fits.getdata(DATA / "legacysurvey_dr6" / "legacysurvey-0959p805-invvar-g.fits.fz")
    sl = (slice(0, 1876), slice(0, 882))  # the part of the brick with data
    image = np.ascontiguousarray(image[sl], np.float32)
    ivar = np.ascontiguousarray(ivar[sl], np.float32)
    bad = ~(ivar > 0)
    sigma = np.where(bad, np.median(1 / np.sqrt(ivar[~bad])), 1 / np.sqrt(np.where(bad, 1, ivar)))
    sigma = sigma.astype(np.float32)
    bits = np.where(bad, np.uint16(bit("nodata")), np.uint16(0)).astype(np.uint16)
    image = image - estimate_background(image, bad, 64, 3).back
    ext = extract_sources(image, sigma, bad, thresh=1.5, minarea=5)
    obj = ext.objects
    aper = auto_apertures(image, obj, ext.segmap, mask=bad)
    flux, ferr, _ = auto_flux(image, aper, err=sigma, mask=bad, segmap=ext.segmap)
    exclude = (obj["flag"] & sep.OBJ_TRUNC) != 0
    args = (image, sigma, bad, bits, ext.segmap, obj["x"], obj["y"], flux / ferr)
    est = estimate_psf(*args, PIX, exclude=exclude)
    assert est.source == "stars" and est.n_stars >= 15
    assert 1.5 <= est.beta <= 6.0
    assert 1.2 <= est.fwhm_arcsec <= 2.5
    sel = select_stars(image, bad, bits, ext.segmap, obj["x"], obj["y"], flux / ferr, exclude)
    r50_fit = _r50_within(est.fwhm_fit_arcsec / PIX, est.beta_fit, 15.0)
    assert r50_fit == pytest.approx(sel.r50_locus, rel=0.03)


def test_sample_inconsistent_with_header_fwhm_gives_default() -> None:
    """Only compact galaxies (no star): the locus falls on them, their free-fit FWHM
    disagrees with the header's, so beta is not measured from them."""
    f = _field(3.0, seed=5, n_star=0, n_gal=0, n_saturated=0)
    rng = np.random.default_rng(5)
    img = galsim.ImageF(SIZE, SIZE, scale=PIX)
    psf = galsim.Moffat(beta=3.0, fwhm=FWHM)
    for _ in range(40):
        gal = galsim.Exponential(half_light_radius=0.45, flux=10 ** rng.uniform(1.5, 2.5))
        x, y = rng.uniform(25, SIZE - 25, 2)
        galsim.Convolve(gal, psf).drawImage(image=img, add_to_image=True, method="no_pixel",
                                            center=galsim.PositionD(x + 1, y + 1))
    sigma = np.sqrt(NOISE**2 + np.maximum(img.array, 0.0) / GAIN)
    f["image"] = (img.array + rng.normal(size=sigma.shape) * sigma).astype(np.float32)
    f["sigma"] = sigma.astype(np.float32)
    d = _detect(f)
    free = _estimate(f, d)  # no header: the galaxies are fitted as if they were the PSF
    assert free.source == "stars" and free.fwhm_fit_arcsec > 1.15 * FWHM, free
    est = _estimate(f, d, fwhm_arcsec=FWHM, beta_default=3.5)
    assert est.source == "default" and est.beta == 3.5, est
