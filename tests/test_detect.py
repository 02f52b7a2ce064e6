"""Detect stage on a synthetic tile store with known sources (fast)."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest

from tilecat.bits import bit
from tilecat.config import validate_config

BANDS = ["g", "r", "i", "z"]
SHAPE = (192, 224)  # (ny, nx)
PIXSCALE = 0.262
NOISE = {"g": 0.04, "r": 0.05, "i": 0.06, "z": 0.08}  # nanomaggy / pixel
SED = {"g": 0.6, "r": 1.0, "i": 1.2, "z": 1.3}
PSF_SIGMA = 1.6  # pixels
# (x, y, r-band flux in nanomaggies): isolated sources
SOURCES = [
    (40.3, 30.7, 20.0),
    (150.8, 40.2, 12.0),
    (100.1, 100.6, 30.0),
    (60.6, 150.4, 8.0),
    (180.2, 160.9, 15.0),
    (120.4, 60.1, 10.0),
]
COSMIC = (30, 120)  # (y, x): a masked cosmic ray in g, far from any source
MASKED_SRC = 3  # index of the source with a masked 3x3 block (all bands) near its centre
CR_ON_SRC = 5  # index of the source with a cosmic ray (r only) on its centre
TILE, INDEX = "t0001", 7


def _wcs_header() -> dict:
    return {
        "NAXIS": 2, "NAXIS1": SHAPE[1], "NAXIS2": SHAPE[0],
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
        "CRVAL1": 150.1, "CRVAL2": 2.2, "CRPIX1": 100.5, "CRPIX2": 90.5,
        "CD1_1": -PIXSCALE / 3600, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": PIXSCALE / 3600,
        "RADESYS": "ICRS", "EQUINOX": 2000.0,
    }


def _config(root: Path) -> dict:
    cfg = {
        "survey": {
            "name": "synth", "bands": BANDS, "pixel_scale": PIXSCALE,
            "zeropoints": {b: 22.5 for b in BANDS},
            "files": {"image": {"pattern": "unused/{tile}-{band}.fits"}},
        },
        "tiles": str(root / "tiles.tsv"),
        "results": str(root / "results"),
    }
    return validate_config(cfg)


def _render(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ny, nx = SHAPE
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = np.zeros((len(BANDS), ny, nx), np.float32)
    for bi, band in enumerate(BANDS):
        for x0, y0, f in SOURCES:
            g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * PSF_SIGMA**2))
            image[bi] += (f * SED[band] * g / (2 * np.pi * PSF_SIGMA**2)).astype(np.float32)
        image[bi] += rng.normal(0, NOISE[band], (ny, nx)).astype(np.float32)
        image[bi] += 0.3  # flat sky left in
    invvar = np.stack([np.full((ny, nx), 1 / NOISE[b] ** 2, np.float32) for b in BANDS])
    dq = np.zeros(image.shape, np.uint16)
    # a bright cosmic ray in g, flagged
    cy, cx = COSMIC
    image[0, cy:cy + 2, cx] += 40.0
    dq[0, cy:cy + 2, cx] = bit("cosmic_ray")
    # a bad 3x3 block in every band next to a source centre
    x0, y0, _ = SOURCES[MASKED_SRC]
    by, bx = int(round(y0)), int(round(x0)) + 2
    dq[:, by - 1:by + 2, bx - 1:bx + 2] = bit("bad")
    image[:, by - 1:by + 2, bx - 1:bx + 2] = 1e4
    # a cosmic ray on a source centre, r band only
    x0, y0, _ = SOURCES[CR_ON_SRC]
    dq[1, int(round(y0)), int(round(x0))] = bit("cosmic_ray")
    image[1, int(round(y0)), int(round(x0))] += 30.0
    # a no-data corner
    invvar[:, :6, -6:] = 0.0
    return image, invvar, dq


def _make_store(root: Path, dq_in_defect_mask: bool = False) -> dict:
    import xarray as xr

    from tilecat.store import write_arrays, write_group
    from tilecat.survey import tile_paths

    cfg = _config(root)
    store = tile_paths(cfg, TILE)["store"]
    image, invvar, dq = _render()
    write_group(store, {"bands": BANDS, "pixel_scale": PIXSCALE, "wcs": _wcs_header(),
                        "zeropoints": {b: 22.5 for b in BANDS}})
    dims = ("band", "y", "x")
    coords = {"band": np.array(BANDS, dtype=object)}
    arrays = {
        "image": xr.DataArray(image, dims=dims, coords=coords),
        "invvar": xr.DataArray(invvar, dims=dims, coords=coords),
        "dq": xr.DataArray(np.zeros_like(dq) if dq_in_defect_mask else dq, dims=dims,
                           coords=coords),
    }
    if dq_in_defect_mask:
        arrays["defect_mask"] = xr.DataArray(dq, dims=dims, coords=coords)
    write_arrays(store, arrays)
    return cfg


@pytest.fixture(scope="module")
def detected(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from tilecat.detect import run_detect
    from tilecat.survey import tile_paths

    root = tmp_path_factory.mktemp("detect")
    cfg = _make_store(root)
    run_detect(cfg, TILE, INDEX)
    return {"cfg": cfg, "paths": tile_paths(cfg, TILE), "root": root}


def _table(paths: dict):
    import pyarrow.parquet as pq

    return pq.read_table(paths["sources"]).to_pandas()


def _match(df, x0: float, y0: float):
    d = np.hypot(df["x"] - x0, df["y"] - y0)
    return df.iloc[int(np.argmin(d))], float(d.min())


def test_sources_found_at_known_positions(detected: dict) -> None:
    df = _table(detected["paths"])
    assert len(df) == len(SOURCES)
    for i, (x0, y0, _) in enumerate(SOURCES):
        _, d = _match(df, x0, y0)
        # a masked block beside the centre biases the isophotal barycentre
        assert d < (1.0 if i == MASKED_SRC else 0.5)


def test_object_ids_and_order(detected: dict) -> None:
    df = _table(detected["paths"])
    ids = df["object_id"].to_numpy()
    assert ids.dtype == np.int64
    assert np.array_equal(ids, INDEX * 1_000_000 + np.arange(1, len(df) + 1))
    # numbered by y then x
    assert np.all(np.diff(df["y"].to_numpy()) >= 0)
    assert set(df["tile"]) == {TILE}


def test_fluxes_within_errors(detected: dict) -> None:
    df = _table(detected["paths"])
    for x0, y0, f in SOURCES:
        row, _ = _match(df, x0, y0)
        if row["flag_masked"]:
            continue
        for band in BANDS:
            true = f * SED[band]
            err = row[f"flux_err_{band}"]
            assert err > 0
            # Kron apertures miss ~1% of a Gaussian's light
            assert abs(row[f"flux_{band}"] - true) < 3 * err + 0.02 * true, (band, row)
            mag = 22.5 - 2.5 * np.log10(row[f"flux_{band}"])
            assert row[f"mag_{band}"] == pytest.approx(mag, abs=1e-4)
            assert row[f"mag_err_{band}"] == pytest.approx(1.0857 * err / row[f"flux_{band}"],
                                                          rel=1e-3)
        # noise of the aperture sum: sigma * sqrt(pi r^2)
        r = 1.5 / PIXSCALE
        assert row["flux_aper_err_r"] == pytest.approx(NOISE["r"] * np.sqrt(np.pi) * r, rel=0.02)
        assert row["flux_aper_r"] < row["flux_r"] * 1.02


def test_shapes_and_sizes(detected: dict) -> None:
    df = _table(detected["paths"])
    clean = df[~df["flag_masked"]]
    # round Gaussians: small ellipticity; r50 = sqrt(2 ln 2) sigma
    assert np.all(np.hypot(clean["e1"], clean["e2"]) < 0.15)
    r50 = np.sqrt(2 * np.log(2)) * PSF_SIGMA * PIXSCALE
    assert np.median(clean["r50"]) == pytest.approx(r50, rel=0.1)
    assert np.all(clean["a"] >= clean["b"])
    assert np.all(clean["snr_det"] > 20)


def test_ra_dec_from_wcs(detected: dict) -> None:
    from astropy.io import fits
    from astropy.wcs import WCS

    df = _table(detected["paths"])
    w = WCS(fits.Header(_wcs_header()))
    for i, (x0, y0, _) in enumerate(SOURCES):
        row, _ = _match(df, x0, y0)
        ra, dec = w.all_pix2world(x0, y0, 0)
        sep_arcsec = np.hypot((row["ra"] - ra) * np.cos(np.radians(dec)), row["dec"] - dec) * 3600
        assert sep_arcsec < (1.0 if i == MASKED_SRC else 0.5) * PIXSCALE
        # the 0-based convention: the pixel itself maps back exactly
        ra1, dec1 = w.all_pix2world(row["x"], row["y"], 0)
        assert row["ra"] == pytest.approx(float(ra1), abs=1e-9)
        assert row["dec"] == pytest.approx(float(dec1), abs=1e-9)


def test_masked_pixels_not_detected_and_flagged(detected: dict) -> None:
    df = _table(detected["paths"])
    cy, cx = COSMIC
    assert np.hypot(df["x"] - cx, df["y"] - cy).min() > 5, "masked cosmic ray detected"
    row, _ = _match(df, *SOURCES[MASKED_SRC][:2])
    assert row["flag_masked"]
    assert row["defect_bits"] & bit("bad")
    assert 0 < row["masked_frac"] < 0.5
    row, _ = _match(df, *SOURCES[CR_ON_SRC][:2])
    assert row["flag_masked"]
    assert row["defect_bits"] & bit("cosmic_ray")
    clean = [i for i in range(len(SOURCES)) if i not in (MASKED_SRC, CR_ON_SRC)]
    for i in clean:
        row, _ = _match(df, *SOURCES[i][:2])
        assert not row["flag_masked"] and row["defect_bits"] == 0 and row["masked_frac"] == 0


def test_unmasked_cosmic_ray_would_be_detected() -> None:
    """Control: the same cosmic ray without its dq bit is a detection."""
    from tilecat.detect.background import estimate_background
    from tilecat.detect.detimage import detection_image
    from tilecat.detect.extract import extract_sources

    image, invvar, _ = _render()
    sigma = 1 / np.sqrt(invvar.clip(1e-12))
    masked = invvar <= 0
    sub = np.stack([image[b] - estimate_background(image[b], masked[b]).back
                    for b in range(len(BANDS))])
    det = detection_image(sub, sigma, masked)
    obj = extract_sources(det.data, det.err, det.mask).objects
    cy, cx = COSMIC
    assert np.hypot(obj["x"] - cx, obj["y"] - cy).min() < 2


def test_segmap_in_store(detected: dict) -> None:
    from tilecat.store import open_tile

    ds = open_tile(detected["paths"]["store"])
    seg = ds["segmap"].values
    df = _table(detected["paths"])
    assert seg.dtype == np.int32 and seg.shape == SHAPE
    assert set(np.unique(seg)) == set(range(len(df) + 1))
    for k, row in enumerate(df.itertuples(), start=1):
        assert seg[int(round(row.y)), int(round(row.x))] == k


def test_cutouts(detected: dict) -> None:
    import xarray as xr

    from tilecat.infer.cutouts import open_cutouts

    path = detected["paths"]["cutouts"]
    ds = xr.open_zarr(path, consolidated=False)
    df = _table(detected["paths"])
    n = len(df)
    assert ds["stamp"].shape == (n, len(BANDS), 64, 64)
    assert ds["stamp"].dtype == np.float32
    assert ds["sigma"].shape == (n, len(BANDS))
    assert list(ds["band"].values) == BANDS
    assert np.array_equal(ds["object_id"].values, df["object_id"].to_numpy())
    stamps = ds["stamp"].values
    sig = ds["sigma"].values
    # the background rms is the pixel noise here
    for b, band in enumerate(BANDS):
        assert np.median(sig[:, b]) == pytest.approx(NOISE[band], rel=0.1)
    image, _, _ = _render()
    for k, row in enumerate(df.itertuples()):
        cx, cy = int(np.floor(row.x + 0.5)), int(np.floor(row.y + 0.5))
        # the source pixel is the stamp centre; value = asinh((F - sky) / sigma)
        for b in range(len(BANDS)):
            expect = float(np.arcsinh((image[b, cy, cx] - 0.3) / sig[k, b]))
            if not row.flag_masked:
                assert stamps[k, b, 32, 32] == pytest.approx(expect, abs=0.1 * expect + 0.1)
        assert stamps[k, :, 32, 32].min() > 2
    # the source near the top edge: rows outside the image are exactly 0
    k = int(np.argmin(df["y"].to_numpy()))
    y0 = int(np.floor(df["y"].iloc[k] + 0.5)) - 32
    assert y0 < 0 and np.all(stamps[k, :, : -y0, :] == 0)
    # and the infer stage can open it
    cut = open_cutouts(path, TILE)
    assert len(cut) == n and cut.bands == BANDS and cut.size == 64


@pytest.mark.filterwarnings("ignore:No table..len")
def test_units_and_astropy(detected: dict) -> None:
    from astropy.table import Table

    from tilecat.parquetmeta import read_descriptions, read_units

    path = detected["paths"]["sources"]
    units = read_units(path)
    assert units["ra"] == "deg" and units["flux_g"] == "nanomaggy" and units["r50"] == "arcsec"
    assert "AB" in read_descriptions(path)["mag_i"]
    t = Table.read(path)
    assert str(t["flux_r"].unit) == "nmgy"
    assert str(t["dec"].unit) == "deg"
    assert t["object_id"].dtype == np.int64
    assert t["defect_bits"].dtype == np.uint16
    assert t["flag_edge"].dtype == bool


def test_defect_mask_used_when_present(tmp_path: Path) -> None:
    from tilecat.detect import run_detect
    from tilecat.survey import tile_paths

    cfg = _make_store(tmp_path, dq_in_defect_mask=True)
    run_detect(cfg, TILE, INDEX)
    df = _table(tile_paths(cfg, TILE))
    cy, cx = COSMIC
    assert len(df) == len(SOURCES)
    assert np.hypot(df["x"] - cx, df["y"] - cy).min() > 5
    row, _ = _match(df, *SOURCES[MASKED_SRC][:2])
    assert row["defect_bits"] & bit("bad")


def test_deterministic(tmp_path: Path) -> None:
    """Two runs on the same store give byte-identical products."""
    import shutil

    from tilecat.detect import run_detect
    from tilecat.survey import tile_paths

    cfg = _make_store(tmp_path)
    p = tile_paths(cfg, TILE)
    run_detect(cfg, TILE, INDEX)
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(p["sources"], first / "sources.parquet")
    shutil.copytree(p["cutouts"], first / "cutouts.zarr")
    shutil.copytree(p["store"] / "segmap", first / "segmap")
    run_detect(cfg, TILE, INDEX)

    def digest(path: Path) -> str:
        h = hashlib.sha256()
        for f in sorted(q for q in Path(path).rglob("*") if q.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes())
        return h.hexdigest()

    assert (first / "sources.parquet").read_bytes() == p["sources"].read_bytes()
    assert digest(first / "cutouts.zarr") == digest(p["cutouts"])
    assert digest(first / "segmap") == digest(p["store"] / "segmap")


def test_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tilecat.detect import run_detect
    from tilecat.survey import tile_paths

    cfg = _make_store(tmp_path)
    paths = tile_paths(cfg, TILE)
    import tilecat.parquetmeta as pm

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pm, "write_table", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run_detect(cfg, TILE, INDEX)
    assert not paths["sources"].exists()
    assert not paths["cutouts"].exists()
    assert not (paths["store"] / "segmap").exists()
    leftovers = [p.name for p in paths["dir"].iterdir() if p.name != "tile.zarr"]
    assert leftovers == []


def test_missing_store_and_bad_config(tmp_path: Path) -> None:
    from tilecat.detect import run_detect
    from tilecat.errors import ConfigError, InputError

    cfg = _config(tmp_path)
    with pytest.raises(InputError, match="t0001"):
        run_detect(cfg, TILE, 0)
    cfg = _make_store(tmp_path)
    bad = copy.deepcopy(cfg)
    bad["detect"]["mask_bits"] = ["cosmic_ray", "gremlin"]
    with pytest.raises(ConfigError, match="gremlin"):
        run_detect(bad, TILE, 0)


def test_no_sources(tmp_path: Path) -> None:
    """A blank tile gives empty but valid products."""
    import pyarrow.parquet as pq
    import xarray as xr

    from tilecat.detect import run_detect
    from tilecat.store import write_arrays, write_group
    from tilecat.survey import tile_paths

    cfg = _config(tmp_path)
    paths = tile_paths(cfg, TILE)
    rng = np.random.default_rng(5)
    dims = ("band", "y", "x")
    write_group(paths["store"], {"wcs": _wcs_header()})
    write_arrays(paths["store"], {
        "image": xr.DataArray(rng.normal(0, 1, (4, 64, 64)).astype(np.float32), dims=dims,
                              coords={"band": np.array(BANDS, dtype=object)}),
        "invvar": xr.DataArray(np.ones((4, 64, 64), np.float32), dims=dims),
        "dq": xr.DataArray(np.zeros((4, 64, 64), np.uint16), dims=dims),
    })
    cfg["detect"]["thresh"] = 50.0
    run_detect(cfg, TILE, 0)
    t = pq.read_table(paths["sources"])
    assert t.num_rows == 0 and "flux_z" in t.column_names
    ds = xr.open_zarr(paths["cutouts"], consolidated=False)
    assert ds["stamp"].shape == (0, 4, 64, 64)


def test_cli(detected: dict, tmp_path: Path) -> None:
    import yaml

    from tilecat.cli import main

    cfg = copy.deepcopy(detected["cfg"])
    root = tmp_path
    cfg["results"] = str(root / "results")
    cfg.pop("detect")
    (root / "tiles.tsv").write_text(f"tile\tindex\n{TILE}\t{INDEX}\n")
    cfg["tiles"] = str(root / "tiles.tsv")
    cfgfile = root / "c.yaml"
    cfgfile.write_text(yaml.safe_dump(cfg))
    _make_store(root)
    src = Path(detected["paths"]["sources"])
    main(["detect", TILE, "--config", str(cfgfile)])
    out = root / "results" / "tiles" / TILE / "sources.parquet"
    import pyarrow.parquet as pq

    # same rows as the fixture's run (metadata differ: the config holds other paths)
    assert pq.read_table(out).replace_schema_metadata(None).equals(
        pq.read_table(src).replace_schema_metadata(None))


def test_blended_edge_and_masked_stamp_pixels() -> None:
    """A close pair is flagged blended, a source cut by the border flagged edge."""
    from tilecat.detect import detect_tile
    from tilecat.detect.cutouts import make_stamps, stamp_origin
    from tilecat.detect.inputs import TileData

    rng = np.random.default_rng(3)
    ny, nx = 80, 100
    yy, xx = np.mgrid[0:ny, 0:nx]
    scene = [(30.0, 40.0, 40.0), (35.5, 41.0, 25.0), (70.0, 20.0, 30.0), (98.5, 60.0, 30.0)]
    img = np.zeros((1, ny, nx), np.float32)
    for x0, y0, f in scene:
        g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.5**2))
        img[0] += f * g / (2 * np.pi * 2.25)
    img[0] += rng.normal(0, 0.05, (ny, nx)).astype(np.float32)
    masked = np.zeros(img.shape, bool)
    masked[0, 20, 70] = True  # on the isolated source
    data = TileData(tile="x", store=Path("x"), bands=["r"], image=img.copy(),
                    sigma=np.full(img.shape, 0.05, np.float32),
                    bits=np.where(masked, np.uint16(bit("hot")), np.uint16(0)), masked=masked,
                    pixel_scale=0.262, zeropoints={"r": 22.5}, attrs={"wcs": _wcs_header()})
    res = detect_tile(data, _config(Path("."))["detect"], 0)
    c = res.columns
    assert len(c["x"]) == 4

    def at(x0: float, y0: float) -> int:
        return int(np.argmin(np.hypot(c["x"] - x0, c["y"] - y0)))

    pair = [at(30, 40), at(35.5, 41)]
    assert pair[0] != pair[1]
    assert all(c["flag_blended"][k] for k in pair)
    assert not c["flag_blended"][at(70, 20)] and not c["flag_blended"][at(98.5, 60)]
    assert c["flag_edge"][at(98.5, 60)] and not any(c["flag_edge"][k] for k in pair)
    iso = at(70, 20)
    assert c["flag_masked"][iso] and c["defect_bits"][iso] == bit("hot")
    # stamps: the masked pixel is 0, its neighbours are bright
    y0, x0 = stamp_origin(c["x"][iso:iso + 1], c["y"][iso:iso + 1], 16)
    st = make_stamps(res.images, masked, y0, x0, res.stamp_sigma[iso:iso + 1], 16)
    assert st[0, 0, 20 - y0[0], 70 - x0[0]] == 0.0
    assert st[0, 0, 20 - y0[0], 71 - x0[0]] > 2.0


def test_extract_grows_pixel_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """A source larger than sep's pixel stack is retried with a bigger stack."""
    import sep

    from tilecat.detect import extract

    monkeypatch.setattr(extract, "_MIN_PIXSTACK", 16)
    yy, xx = np.mgrid[0:96, 0:96]
    img = (100 * np.exp(-((xx - 48) ** 2 + (yy - 48) ** 2) / (2 * 12.0**2))).astype(np.float32)
    img += np.random.default_rng(0).normal(0, 1, img.shape).astype(np.float32)
    res = extract.extract_sources(img, 1.0, thresh=3.0, deblend_cont=1.0)
    assert len(res.objects) >= 1 and res.objects["npix"].max() > 96 * 96 // 8
    assert sep.get_extract_pixstack() > 96 * 96 // 8


def test_missing_wcs_is_an_input_error() -> None:
    from tilecat.detect import detect_tile
    from tilecat.detect.inputs import TileData
    from tilecat.errors import InputError

    img = np.zeros((1, 32, 32), np.float32)
    data = TileData(tile="t9", store=Path("s/tile.zarr"), bands=["r"], image=img,
                    sigma=np.ones_like(img), bits=np.zeros(img.shape, np.uint16),
                    masked=np.zeros(img.shape, bool), pixel_scale=0.262,
                    zeropoints={"r": 22.5}, attrs={})
    with pytest.raises(InputError, match=r"t9.*tile\.zarr.*wcs"):
        detect_tile(data, _config(Path("."))["detect"], 0)


def test_footprint_stats_by_hand() -> None:
    from tilecat.detect.footprint import footprint_stats, touching_neighbours

    seg = np.zeros((12, 12), np.int32)
    seg[1:6, 1:6] = 1  # 25 px
    seg[2:5, 2:5] = 0  # a 3x3 hole: masked pixels, not in the segment
    seg[8:11, 8:11] = 2  # 9 px, far from everything masked
    bits = np.zeros((12, 12), np.uint16)
    masked = np.zeros((12, 12), bool)
    bits[2:5, 2:5] = bit("cosmic_ray")
    masked[2:5, 2:5] = True
    bits[1, 1] = bit("saturated")  # a defect that is not masked, inside segment 1
    bits[0, 11] = bit("trail")  # masked, far from both segments
    masked[0, 11] = True
    st = footprint_stats(seg, bits, masked, 2)
    assert st.npix.tolist() == [25, 9]  # 16 + the 9 hole pixels
    assert st.defect_bits[0] == bit("cosmic_ray") | bit("saturated")
    assert st.masked_frac[0] == pytest.approx(10 / 25)
    assert st.flag_masked.tolist() == [True, False]
    assert st.defect_bits[1] == 0 and st.masked_frac[1] == 0
    seg[6, 6] = 2  # touches segment 1 diagonally (5, 5) and nothing else
    assert touching_neighbours(seg, 2).tolist() == [True, True]
