"""Tests of the photo-z network, its inference head in the engine, and train_photoz."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from test_photoz_fixtures import BANDS, infer_config, write_cutouts, write_stamp_store  # noqa: E402

from tilecat.errors import InputError  # noqa: E402
from tilecat.infer import run_infer  # noqa: E402
from tilecat.models import load_model, save_model  # noqa: E402
from tilecat.photoz.augment import d4_centred  # noqa: E402
from tilecat.photoz.grid import META_KEY, ZGrid  # noqa: E402
from tilecat.photoz.model import build  # noqa: E402
from tilecat.photoz.summary import cdf_at  # noqa: E402
from tilecat.survey import tile_paths  # noqa: E402

SIZE = 32
GRID = ZGrid(0.0, 1.5, 60)


def _card() -> dict:
    return {"name": "photoz", "version": "0",
            "input": {"bands": BANDS, "stamp_size": SIZE, "pixel_scale": 0.262},
            "z_grid": GRID.to_meta(), "prior": {"p": list(GRID.histogram([0.3, 0.5]))}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("photoz")
    save_model(build(_card()), _card(), d)
    return d


def test_module_outputs_normalised_pdfs_batch_invariant():
    torch.manual_seed(1)
    m = build(_card()).eval()
    x = torch.randn(5, 4, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    s = torch.full((5, 4), 0.005)
    with torch.inference_mode():
        p5 = m(x, s)
        p2 = m(x[:2], s[:2])
    assert p5.shape == (5, 60) and torch.all(p5 >= 0)
    torch.testing.assert_close(p5.sum(1), torch.ones(5))
    assert torch.equal(p5[:2], p2)


def test_photometric_features_depend_on_sigma():
    """Colours need sigma: scaling one band's noise changes the colour features."""
    m = build(_card()).eval()
    x = torch.randn(3, 4, SIZE, SIZE) + 2.0
    s = torch.full((3, 4), 0.005)
    s2 = s.clone()
    s2[:, 0] *= 10 ** 0.4  # g band 1 mag brighter
    f1, f2 = m.net.photo.raw(x, s), m.net.photo.raw(x, s2)
    a = m.net.photo.n_ap
    # reference (r) magnitudes unchanged, g-r colours 1 mag bluer
    torch.testing.assert_close(f1[:, :a], f2[:, :a])
    torch.testing.assert_close(f1[:, a:2 * a] - f2[:, a:2 * a], torch.ones(3, a), atol=0.02,
                               rtol=0)


def test_d4_centred_keeps_centre():
    x = torch.zeros(1, 1, SIZE, SIZE)
    x[0, 0, SIZE // 2, SIZE // 2] = 1.0
    x[0, 0, SIZE // 2, SIZE // 2 + 3] = 2.0
    for k in range(8):
        y = d4_centred(x, k)
        assert y[0, 0, SIZE // 2, SIZE // 2] == 1.0
        assert float(y.sum()) == 3.0
        r = torch.nonzero(y[0, 0] == 2.0)[0] - SIZE // 2
        assert int(r.abs().sum()) == 3  # the other pixel stays 3 px from the centre


def test_engine_writes_photoz_columns(tmp_path, model_dir):
    tables = []
    for bs in (1, 64):
        cfg = infer_config(tmp_path / f"b{bs}", ["photoz"], {"photoz": str(model_dir)}, bs)
        ids = write_cutouts(cfg, "t0", 20, SIZE)
        run_infer(cfg, "t0")
        tables.append(pq.read_table(tile_paths(cfg, "t0")["infer"]))
    t = tables[0]
    assert t.equals(tables[1])  # batch-size invariant
    assert t.column_names == ["object_id", "z_pdf", "z_mean", "z_median", "z_mode", "z_std",
                              "z_odds"]
    assert t.schema.field("z_pdf").type == pa.list_(pa.float16())
    assert all(t.schema.field(c).type == pa.float32() for c in t.column_names[2:])
    assert t["object_id"].to_numpy().tolist() == sorted(ids.tolist())
    p = np.array(t["z_pdf"].to_pylist(), dtype=np.float64)
    assert p.shape == (20, 60) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=3e-3)
    np.testing.assert_allclose(cdf_at(p / p.sum(1, keepdims=True), GRID, t["z_median"].to_numpy()),
                               0.5, atol=2e-3)
    np.testing.assert_allclose(t["z_mean"].to_numpy(), p @ GRID.centres, atol=2e-3)
    meta = t.schema.metadata
    grid = json.loads(meta[META_KEY.encode()])
    assert len(grid["edges"]) == 61 and ZGrid.from_meta(grid) == GRID
    assert "p" in json.loads(meta[b"tilecat.z_prior"])
    assert json.loads(meta[b"tilecat.units"])["z_pdf"] == ""


def test_engine_refuses_cutouts_without_sigma(tmp_path, model_dir):
    cfg = infer_config(tmp_path, ["photoz"], {"photoz": str(model_dir)})
    write_cutouts(cfg, "t0", 5, SIZE, with_sigma=False)
    with pytest.raises(InputError, match="sigma"):
        run_infer(cfg, "t0")


def test_head_converts_zeropoints(tmp_path, model_dir):
    from tilecat.photoz.head import HEAD

    cfg = infer_config(tmp_path, ["photoz"], {"photoz": str(model_dir)})
    cfg["survey"]["zeropoints"] = {"g": 25.0, "r": 22.5, "i": 22.5, "z": 30.0}
    lh = HEAD.load(cfg, torch.device("cpu"))
    np.testing.assert_allclose(lh.module.flux_scale.numpy(), [0.1, 1, 1, 1e-3], rtol=1e-6)
    assert lh.inputs == ("sigma",)  # a card without use_psf (older models)


def test_engine_with_psf_input(tmp_path):
    """A model using the PSF FWHM gets it from the cutouts; PSF changes the PDFs."""
    card = _card()
    card["arch"] = {"use_psf": True}
    torch.manual_seed(0)
    m = build(card)
    assert m.inputs == ("sigma", "psf_fwhm")
    save_model(m, card, tmp_path / "m")
    cfg = infer_config(tmp_path, ["photoz"], {"photoz": str(tmp_path / "m")})
    write_cutouts(cfg, "t0", 6, SIZE, with_psf=True)
    run_infer(cfg, "t0")
    t = pq.read_table(tile_paths(cfg, "t0")["infer"])
    assert t.num_rows == 6 and np.all(np.isfinite(t["z_mean"].to_numpy()))
    x = torch.randn(3, 4, SIZE, SIZE)
    s = torch.full((3, 4), 0.005)
    with torch.inference_mode():
        a = m.eval()(x, s, torch.full((3, 4), 1.0))
        b = m(x, s, torch.full((3, 4), 2.0))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="PSF"):
        m(x, s)


def test_train_photoz_smoke(tmp_path):
    from tilecat.photoz.train import predict_pdf, train_photoz

    store = write_stamp_store(tmp_path / "s.zarr", 120, SIZE, seed=5, n_artifacts=8)
    logs: list[str] = []
    card = train_photoz(store, tmp_path / "m", epochs=2, batch_size=32, threads=1,
                        grid=ZGrid(0.0, 1.5, 30), log=logs.append,
                        arch={"widths": [8, 16], "strides": [2, 2], "kernels": [3, 3],
                              "hidden": 32})
    assert card["training"]["data"]["n_galaxies"] == 120  # artefacts dropped
    assert abs(sum(card["prior"]["p"]) - 1) < 1e-6 and len(card["prior"]["p"]) == 30
    assert 0.5 <= card["temperature"] <= 3.0
    assert card["evaluation"]["set"] == "validation"
    for k in ("sigma_nmad", "bias", "pit_ks", "crps", "outlier_frac_015"):
        assert np.isfinite(card["evaluation"]["metrics"][k])
    module, card2 = load_model(tmp_path / "m", build)
    assert card2["sha256"] == card["sha256"]
    from tilecat.photoz.data import load_photoz_set

    d = load_photoz_set(store)
    p = predict_pdf(module, d.stamps[:10], d.sigma[:10], d.psf_fwhm[:10])
    assert p.shape == (10, 30)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert any("epoch 2/2" in line for line in logs)


def test_degrade_noise_and_sigma():
    from tilecat.photoz.augment import degrade

    gen = torch.Generator().manual_seed(0)
    x = torch.asinh(torch.randn(200, 4, SIZE, SIZE, generator=gen))  # unit noise
    s = torch.full((200, 4), 0.01)
    psf = torch.full((200, 4), 1.0)
    y, s2, p2 = degrade(x, s, gen, prob=1.0, max_noise_factor=2.0, max_blur_fwhm=3.0,
                        psf_fwhm=psf, pixel_scale=0.25)
    assert torch.all((p2 >= 1.0) & (p2 <= np.hypot(1.0, 0.75) + 1e-5))
    k = s2 / s
    assert torch.all((k >= 1.0) & (k <= 2.0 + 1e-6))
    # background noise stays 1 in units of the new sigma (blurred noise + fresh noise)
    std = torch.sinh(y).std(dim=(2, 3))
    assert abs(float(std.mean()) - 1.0) < 0.05
    y0, s0, p0 = degrade(x, s, gen, prob=0.0)
    assert torch.equal(y0, x) and torch.equal(s0, s) and p0 is None


def test_degrade_blur_conserves_flux():
    from tilecat.photoz.augment import degrade

    gen = torch.Generator().manual_seed(3)
    s = torch.zeros(4, 4, SIZE, SIZE)
    s[:, :, SIZE // 2, SIZE // 2] = 1e4  # a bright point source, no noise
    y, _, _ = degrade(torch.asinh(s), torch.full((4, 4), 0.01), gen, prob=1.0,
                      max_noise_factor=1.0 + 1e-9, max_blur_fwhm=6.0)
    f = torch.sinh(y.double())
    torch.testing.assert_close(f.sum(dim=(2, 3)), torch.full((4, 4), 1e4, dtype=torch.float64),
                               rtol=1.5e-2, atol=0)  # + re-added unit noise
    assert float(f.amax(dim=(2, 3)).min()) < 1e4  # it was blurred


def test_sky_offset_shifts_flux_and_keeps_masked_pixels():
    from tilecat.photoz.augment import sky_offset

    gen = torch.Generator().manual_seed(4)
    x = torch.asinh(torch.randn(50, 4, SIZE, SIZE, generator=gen))
    x[:, 2, :4, :] = 0.0  # masked rows
    y = sky_offset(x, gen, prob=1.0, scale=0.5)
    assert torch.all(y[:, 2, :4, :] == 0)
    d = (torch.sinh(y.double()) - torch.sinh(x.double()))[:, :, 8:, :]
    # one constant per stamp and band, spread ~ scale
    torch.testing.assert_close(d.amax(dim=(2, 3)), d.amin(dim=(2, 3)), atol=1e-4, rtol=1e-4)
    assert 0.3 < float(d.mean(dim=(2, 3)).std()) < 0.7
    assert torch.equal(sky_offset(x, gen, prob=0.0), x)


def test_mask_regions_zero_edges_and_defects():
    from tilecat.photoz.augment import mask_regions

    x = torch.ones(40, 4, SIZE, SIZE)
    y = mask_regions(x, torch.Generator().manual_seed(5), prob_edge=1.0, prob_defect=0.0)
    zero = y == 0
    assert torch.all(zero.all(dim=1) == zero.any(dim=1))  # edges: every band at once
    assert torch.all(zero.any(dim=(1, 2, 3)))
    assert torch.all(~zero[:, :, SIZE // 2, SIZE // 2])  # never the centre (>= 6 px away)
    y = mask_regions(x, torch.Generator().manual_seed(5), prob_edge=0.0, prob_defect=1.0)
    zero = y == 0
    assert torch.all(zero.any(dim=(1, 2, 3)))
    assert bool((zero.any(dim=(2, 3)).sum(1) < 4).any())  # defects: band by band
    y2 = mask_regions(x, torch.Generator().manual_seed(5), prob_edge=0.0, prob_defect=1.0)
    assert torch.equal(y, y2)  # seeded
    assert torch.equal(mask_regions(x, torch.Generator(), 0.0, 0.0), x)


def test_mask_features_fill_masked_pixels_with_the_aperture_mean():
    """A flat source with the left half masked in r: the mean-filled aperture fluxes equal
    the unmasked ones and the masked fractions are those of the apertures' weights."""
    from tilecat.photoz.model import PhotoFeatures
    from tilecat.photoz.photometry import aperture_weights

    radii = [2.0, 4.0, 8.0]
    x = torch.full((1, 4, SIZE, SIZE), float(np.arcsinh(5.0)))
    xm = x.clone()
    xm[0, 1, :, :SIZE // 2] = 0.0
    s = torch.full((1, 4), 0.01)
    pf = PhotoFeatures(4, SIZE, radii, ref=1, use_mask=True)
    f, fm = pf.raw(x, s), pf.raw(xm, s)
    a = pf.n_ap
    torch.testing.assert_close(fm[:, :a], f[:, :a], atol=1e-4, rtol=0)  # r magnitudes
    w = aperture_weights(SIZE, radii).astype(np.float64)
    expect = w[:, :, :SIZE // 2].sum(axis=(1, 2)) / w.sum(axis=(1, 2))
    masked = fm[0, pf.mask_slice].reshape(4, a)
    assert torch.all(masked[[0, 2, 3]] == 0)
    np.testing.assert_allclose(masked[1].numpy(), expect, atol=1e-5)
    assert float(f[0, pf.mask_slice].abs().max()) == 0.0
    # without the correction the masked r band looks fainter
    pf0 = PhotoFeatures(4, SIZE, radii, ref=1, use_mask=False)
    assert torch.all(pf0.raw(xm, s)[:, :a] > pf0.raw(x, s)[:, :a] + 0.3)


def test_old_cards_build_without_mask_features():
    m_old = build(_card())  # no arch in the card: the defaults of cards before use_mask
    card = {**_card(), "arch": {"use_mask": True}}
    m_new = build(card)
    assert not m_old.net.photo.use_mask and m_new.net.photo.use_mask
    assert m_new.net.photo.n_features == m_old.net.photo.n_features + 4 * m_old.net.photo.n_ap


def test_degrade_moffat_kernel_gives_a_broader_moffat():
    """kernel='moffat' turns a Moffat PSF into the Moffat of the new FWHM (same beta), keeps
    the flux, and leaves unit background noise in units of the new sigma."""
    from tilecat.photoz.augment import degrade
    from tilecat.simulate.kspace import moffat_image

    size, f1, beta = 48, 1.2, 3.5
    star = torch.from_numpy(moffat_image(size, 0.262, f1, beta)).float() * 1e5
    x = torch.asinh(star[None, None].expand(3, 4, size, size))
    gen = torch.Generator().manual_seed(0)
    y, _, p2 = degrade(x, torch.full((3, 4), 0.01), gen, prob=1.0,
                       max_noise_factor=1.0 + 1e-9, max_blur_fwhm=8.0,
                       psf_fwhm=torch.full((3, 4), f1), pixel_scale=0.262, kernel="moffat",
                       beta_range=(beta, beta))
    f = torch.sinh(y.double())
    torch.testing.assert_close(f.sum(dim=(2, 3)), torch.full((3, 4), 1e5, dtype=torch.float64),
                               rtol=1e-2, atol=0)
    assert float(p2.min()) > f1
    for i in range(3):
        want = moffat_image(size, 0.262, float(p2[i, 0]), beta) * 1e5
        assert np.abs(f[i, 0].numpy() - want).max() < 0.01 * want.max()
    noise = torch.asinh(torch.randn(100, 4, size, size, generator=gen))
    y, _, _ = degrade(noise, torch.full((100, 4), 0.01), gen, prob=1.0, max_noise_factor=2.0,
                      max_blur_fwhm=8.0, psf_fwhm=torch.full((100, 4), f1), kernel="moffat")
    assert abs(float(torch.sinh(y).std(dim=(2, 3)).mean()) - 1.0) < 0.05
    with pytest.raises(ValueError, match="PSF FWHM"):
        degrade(x, torch.full((3, 4), 0.01), gen, prob=1.0, kernel="moffat")
