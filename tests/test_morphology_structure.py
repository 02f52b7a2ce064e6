"""Tests of the structure network (loss, mirror equivariance) and of the shipped model."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tilecat.structure.model import (MirrorAveraged, StructureNet, add_beta_input,
                                     profile_feature, psf_profile_feature,  # noqa: E402
                                     widen_inputs,
                                     gaussian_nll, predict_structure)
from tilecat.structure.train import structure_targets, transform_structure  # noqa: E402

PIXSCALE = 0.262
SHIPPED = Path(str(resources.files("tilecat").joinpath("data", "models", "structure")))


def test_gaussian_nll_minimised_at_truth_and_ignores_nan():
    t = torch.tensor([[0.5, 1.0, 0.1, float("nan")]])
    good = torch.tensor([[0.5, 1.0, 0.1, 0.0, -1.0, -1.0, -1.0, -1.0]])
    bad = torch.tensor([[1.5, 1.0, 0.1, 9.0, -1.0, -1.0, -1.0, -1.0]])
    assert float(gaussian_nll(good, t)[0]) < float(gaussian_nll(bad, t)[0])
    assert float(gaussian_nll(bad, t)[3]) == 0.0  # NaN target ignored
    # for a fixed error the best sigma is the error itself
    e = 0.3
    nll = [float(gaussian_nll(torch.tensor([[e, 0, 0, 0, np.log(s), 0, 0, 0]]),
                              torch.zeros(1, 4))[0]) for s in (0.1, 0.3, 0.9)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_targets_and_d4_transform():
    labels = {"r50": np.array([1.31, -1.0]), "sersic_n": np.array([4.0, 1.0]),
              "e1": np.array([0.2, 0.0]), "e2": np.array([-0.1, 0.0])}
    t = structure_targets(labels, PIXSCALE)
    assert np.isclose(t[0, 0], np.log(5.0)) and np.isnan(t[1, 0])
    tt = torch.from_numpy(t[:1])
    assert torch.equal(transform_structure(tt, 1)[0, 2:], torch.tensor([-0.2, 0.1]))
    assert torch.equal(transform_structure(tt, 4)[0, 2:], torch.tensor([0.2, 0.1]))
    assert torch.equal(transform_structure(tt, 2)[0, 2:], torch.tensor([0.2, -0.1]))


def test_transform_matches_image_moments():
    """The D4 rules for (e1, e2) agree with second moments of a transformed ellipse."""
    from tilecat.morphology.fit import d4

    yy, xx = np.mgrid[:33, :33] - 16.0
    phi = np.radians(30)
    u = xx * np.cos(phi) + yy * np.sin(phi)
    v = -xx * np.sin(phi) + yy * np.cos(phi)
    img = torch.from_numpy(np.exp(-(u**2 / 40 + v**2 / 10)))[None, None]

    def e(im: np.ndarray) -> tuple[float, float]:
        qxx, qyy, qxy = (im * xx**2).sum(), (im * yy**2).sum(), (im * xx * yy).sum()
        d = qxx + qyy
        return (qxx - qyy) / d, 2 * qxy / d

    e0 = e(img[0, 0].numpy())
    for k in range(8):
        ek = e(d4(img, k)[0, 0].numpy())
        want = transform_structure(torch.tensor([[0, 0, *e0]]), k)[0, 2:].numpy()
        np.testing.assert_allclose(ek, want, atol=1e-9)


def test_mirror_equivariance():
    torch.manual_seed(0)
    net = MirrorAveraged(StructureNet(4, {"psf_input": True}), PIXSCALE).eval()
    x = torch.randn(3, 4, 32, 32)
    psf = torch.full((3, 4), 1.2)
    with torch.inference_mode():
        a, b = net(x, psf), net(x.flip(-1), psf)
        c = net(x, psf * 1.5)
    assert not torch.equal(a, c)  # the PSF input is used
    assert torch.equal(a[:, :3], b[:, :3]) and torch.equal(a[:, 3], -b[:, 3])
    assert torch.equal(a[:, 4:], b[:, 4:]) and bool((a[:, 4:] > 0).all())


TINY = {"widths": [8, 8], "strides": [2, 2], "kernels": [3, 3], "hidden": 16,
        "dropout": 0.0, "psf_input": True}


def test_beta_input_required_used_and_mirror_equivariant():
    torch.manual_seed(1)
    net = MirrorAveraged(StructureNet(4, {**TINY, "psf_beta_input": True}), PIXSCALE).eval()
    assert net.net.head.fc1.in_features == 2 * 8 + 4 + 4
    x = torch.randn(3, 4, 32, 32)
    psf, beta = torch.full((3, 4), 1.2), torch.full((3, 4), 2.0)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="Moffat beta"):
            net(x, psf)
        a, b = net(x, psf, beta), net(x.flip(-1), psf, beta)
        c = net(x, psf, beta * 2)
    assert not torch.allclose(a, c)  # the beta input is used
    assert torch.equal(a[:, :3], b[:, :3]) and torch.equal(a[:, 3], -b[:, 3])
    with pytest.raises(ValueError, match="needs psf_input"):
        StructureNet(4, {**TINY, "psf_input": False, "psf_beta_input": True})


def test_d4_average_is_invariant_under_quarter_turns_and_mirrors():
    torch.manual_seed(4)
    net = StructureNet(4, {**TINY, "psf_beta_input": True}).eval()
    d4 = MirrorAveraged(net, PIXSCALE, tta="d4").eval()
    mirror = MirrorAveraged(net, PIXSCALE).eval()
    x = torch.randn(3, 4, 32, 32)
    psf, beta = torch.full((3, 4), 1.2), torch.full((3, 4), 2.5)
    e_sign = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0])
    with torch.inference_mode():
        ref = d4(x, psf, beta)
        turned = d4(torch.rot90(x, 1, dims=(-2, -1)), psf, beta)
        flipped = d4(x.flip(-1), psf, beta)
        m_ref, m_turned = mirror(x, psf, beta), mirror(torch.rot90(x, 1, dims=(-2, -1)), psf, beta)
    torch.testing.assert_close(turned, ref * e_sign, rtol=1e-4, atol=1e-5)  # e -> -e
    torch.testing.assert_close(flipped[:, [0, 1, 2, 4, 5, 6, 7]], ref[:, [0, 1, 2, 4, 5, 6, 7]],
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(flipped[:, 3], -ref[:, 3], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(m_turned, m_ref * e_sign, atol=1e-3)  # mirror-only is not
    with pytest.raises(ValueError, match="test-time average"):
        MirrorAveraged(net, PIXSCALE, tta="c4")


def test_add_beta_input_starts_as_the_old_network():
    torch.manual_seed(2)
    old = StructureNet(4, TINY).eval()
    assert old.head.fc1.in_features == 2 * 8 + 4  # an old card's layout is unchanged
    new = add_beta_input(old, TINY).eval()
    assert new.psf_beta_input and new.head.fc1.in_features == 2 * 8 + 8
    x, psf = torch.randn(5, 4, 32, 32), torch.full((5, 4), 4.5)
    with torch.inference_mode():
        ref = old(x, psf)
        for beta in (1.5, 2.5, 4.5):
            torch.testing.assert_close(new(x, psf, torch.full((5, 4), beta)), ref,
                                       rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        add_beta_input(new, TINY)


def test_profile_feature_is_the_curve_of_growth():
    s, sig = 64, 4.0
    yy, xx = np.mgrid[:s, :s] - (s - 1) / 2
    flux = 2000.0 * np.exp(-(xx**2 + yy**2) / (2 * sig**2))  # in noise units
    x = torch.from_numpy(np.arcsinh(np.stack([flux, 0 * flux]))[None].astype(np.float32))
    radii = [2.0, 4.0, 8.0, 16.0, 31.0]
    f = profile_feature(x, radii).reshape(2, len(radii)).numpy()
    want = (1 - np.exp(-np.square(radii) / (2 * sig**2))) / (1 - np.exp(-31.0**2 / (2 * sig**2)))
    np.testing.assert_allclose(f[0] + 0.5, want, atol=0.03)  # pixelised circles
    assert f[0, -1] == pytest.approx(0.5)
    np.testing.assert_allclose(f[1], -0.5, atol=1e-6)  # empty band: 0 / floor
    # invariant under the dihedral group (the training augmentations)
    for g in (x.flip(-1), x.rot90(1, (-2, -1))):
        torch.testing.assert_close(profile_feature(g, radii), profile_feature(x, radii))


def test_widen_inputs_adds_profile_with_zero_weights():
    torch.manual_seed(3)
    old = StructureNet(4, {**TINY, "psf_beta_input": True}).eval()
    arch = {**TINY, "psf_beta_input": True, "profile_radii": [2, 4, 8, 15]}
    new = widen_inputs(old, arch).eval()
    assert new.head.fc1.in_features == old.head.fc1.in_features + 4 * 4
    x, psf, beta = torch.randn(5, 4, 32, 32), torch.full((5, 4), 4.5), torch.full((5, 4), 3.0)
    with torch.inference_mode():
        torch.testing.assert_close(new(x, psf, beta), old(x, psf, beta), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="keep every input"):
        widen_inputs(new, {**TINY, "psf_beta_input": True})  # removes the profile
    no_beta = StructureNet(4, {**TINY, "profile_radii": [2, 4]})
    with pytest.raises(ValueError, match="keep every input"):  # beta would go before it
        widen_inputs(no_beta, {**TINY, "psf_beta_input": True, "profile_radii": [2, 4]})


def test_psf_profile_feature_is_the_moffat_curve_of_growth():
    """Through the galaxy's apertures, the PSF's fractions are a Moffat's enclosed light."""
    fwhm, beta, s = 4.2, 3.0, 64
    radii = [2.0, 3.0, 6.0, 11.0, 31.0]
    f = psf_profile_feature(torch.tensor([[fwhm, fwhm]]), torch.tensor([[beta, 1.5]]),
                            radii, s).reshape(2, len(radii)).numpy() + 0.5
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    enc = 1 - (1 + np.square(radii) / alpha**2) ** (1 - beta)  # analytic, continuous
    np.testing.assert_allclose(f[0], enc / enc[-1], atol=0.05)  # pixelised circles
    assert f[0, -1] == pytest.approx(1.0)
    assert (f[1, :-1] < f[0, :-1] - 0.05).all()  # low beta: more light in the wings
    # the same apertures as the galaxy's: a stamp of the PSF itself gives the same numbers
    c = (s - 1) / 2
    yy, xx = np.mgrid[:s, :s] - c
    img = 1e4 * (1 + (xx**2 + yy**2) / alpha**2) ** -beta
    x = torch.from_numpy(np.arcsinh(img)[None, None].astype(np.float32))
    np.testing.assert_allclose(profile_feature(x, radii).numpy()[0] + 0.5, f[0], atol=2e-3)


def test_widen_inputs_adds_psf_profile_with_zero_weights():
    torch.manual_seed(4)
    base = {**TINY, "psf_beta_input": True}
    old = StructureNet(4, base).eval()
    arch = {**base, "profile_radii": [2, 4, 8, 15], "psf_profile": True}
    new = widen_inputs(old, arch).eval()
    assert new.head.fc1.in_features == old.head.fc1.in_features + 2 * 4 * 4
    x, psf, beta = torch.randn(5, 4, 32, 32), torch.full((5, 4), 4.5), torch.full((5, 4), 3.0)
    with torch.inference_mode():
        torch.testing.assert_close(new(x, psf, beta), old(x, psf, beta), rtol=1e-5, atol=1e-5)
        new.head.fc1.weight.normal_()
        assert not torch.allclose(new(x, psf, beta), new(x, psf, beta + 1.0))
    with pytest.raises(ValueError, match="keep every input"):  # drops the PSF profile
        widen_inputs(new, {**base, "profile_radii": [2, 4, 8, 15], "hidden": 16})
    with pytest.raises(ValueError, match="psf_profile needs"):
        StructureNet(4, {**TINY, "psf_input": True, "profile_radii": [2, 4],
                         "psf_profile": True})


def test_head_inputs_follow_the_card(tmp_path):
    """Cards with psf_beta_input ask the engine for psf_beta too; old cards do not."""
    from tilecat.models import save_model
    from tilecat.structure.head import HEAD

    x = np.random.default_rng(0).normal(size=(6, 4, 32, 32)).astype(np.float32)
    fwhm = np.full((6, 4), 1.1, np.float32)
    outs = {}
    for name, arch in (("old", TINY), ("beta", {**TINY, "psf_beta_input": True})):
        torch.manual_seed(3)
        card = {"name": "structure", "version": "1", "arch": arch,
                "input": {"bands": ["g", "r", "i", "z"], "pixel_scale": PIXSCALE,
                          "stamp_size": 32}}
        save_model(MirrorAveraged(StructureNet(4, arch), PIXSCALE).eval(), card,
                   tmp_path / name)
        lh = HEAD.load({"survey": {"pixel_scale": PIXSCALE},
                        "infer": {"model_dirs": {"structure": str(tmp_path / name)}}},
                       torch.device("cpu"))
        outs[name] = lh
    assert outs["old"].inputs == ("psf_fwhm",)
    assert outs["beta"].inputs == ("psf_fwhm", "psf_beta")
    r_old = predict_structure(outs["old"].module, x, [fwhm])
    assert r_old.shape == (6, 8) and np.isfinite(r_old).all()
    lo = predict_structure(outs["beta"].module, x, [fwhm, np.full((6, 4), 1.8, np.float32)])
    hi = predict_structure(outs["beta"].module, x, [fwhm, np.full((6, 4), 4.0, np.float32)])
    assert np.abs(lo - hi).max() > 1e-4  # the beta changes the answer
    with pytest.raises(ValueError, match="Moffat beta"):
        predict_structure(outs["beta"].module, x, [fwhm])


def test_blurred_beta_and_training_loop_inputs():
    """Degraded training stamps: the loop gives the model the widened FWHM and the
    blurred beta of the same extra blur; undegraded ones the set's values."""
    from tilecat.morphology.fit import FitConfig, fit
    from tilecat.structure.train import blurred_beta

    beta = torch.tensor([[1.5, 2.5, 4.5]])
    f = torch.full((1, 3), 4.0)
    torch.testing.assert_close(blurred_beta(beta, f, torch.zeros(1, 3)), beta)
    # a Moffat fitted to Moffat * Gaussian(FWHM 4.7 px), FWHM 4 px: 2.34, 5.55, 14.2
    got = blurred_beta(beta, f, torch.full((1, 3), 4.7))
    np.testing.assert_allclose(1 / got.numpy(), 1 / np.array([[2.34, 5.55, 14.2]]), rtol=0.25)
    assert bool((got[:, 1:] > got[:, :-1]).all())

    n = 16
    fwhm = np.tile(np.array([[1.0, 1.2]]), (n, 1))  # arcsec
    b = np.tile(np.array([[2.0, 3.0]]), (n, 1))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, p, be):
            if self.training:
                seen.append((p.detach().clone(), be.detach().clone()))
            return self.w * x.mean(dim=(1, 2, 3))[:, None]

    stamps = np.random.default_rng(0).normal(size=(n, 2, 16, 16)).astype(np.float32)
    targets = np.zeros((n, 1), np.float32)
    cfg = FitConfig(epochs=1, batch_size=8, lr=1e-3, seed=0, threads=1, degrade_prob=0.5,
                    log_every=0)
    fit(Spy(), stamps, targets, lambda out, t: ((out - t) ** 2).mean(), lambda t, k: t,
        (stamps[:4], targets[:4]), cfg, log=lambda m: None, aux=(fwhm, fwhm[:4]),
        pixel_scale=PIXSCALE, extra=(b, b[:4]), extra_blur=blurred_beta)
    f_pix = torch.from_numpy(fwhm[:8]).float() / PIXSCALE
    bt = torch.from_numpy(b[:8]).float()
    n_blurred = 0
    for p, be in seen:
        blur = torch.sqrt((p**2 - f_pix**2).clamp(min=0))
        torch.testing.assert_close(be, blurred_beta(bt, f_pix, blur), rtol=1e-3, atol=1e-3)
        n_blurred += int((blur[:, 0] > 0.1).sum())
        assert bool(((blur[:, 0] > 0.1) == (be[:, 0] > bt[:, 0] + 1e-3)).all())
    assert len(seen) == 2 and 0 < n_blurred < 16


@pytest.mark.skipif(not (SHIPPED / "card.json").is_file(), reason="no shipped structure model")
def test_shipped_model_measures_exponential_disk():
    """A round exponential disk of known r50 is measured within its stated uncertainty.

    The network's own sigma (``to_columns``: before the card's calibration, which scales
    the r50 sigma by ~0.4). With the catalog's calibrated ``struct_r50_err`` the shipped
    model is 1.2-1.3 sigma off at 1.6" and 2.5" (-5.6 %, +9.4 %): issue #5 is open on it.
    The disks have one Moffat PSF in every band; under independent per-band PSFs, as in
    the training sets, the errors at 2.5" shrink (+8 % -> +2 % at S/N ~190, session 8).
    """
    pytest.importorskip("galsim")
    from tilecat.infer.registry import get_head
    from tilecat.structure.disk import exponential_disk_stamps
    from tilecat.structure.train import to_columns

    head = get_head("structure")
    lh = head.load({"survey": {"pixel_scale": PIXSCALE}, "infer": {}}, torch.device("cpu"))
    # (r50 [arcsec], allowed |mean - r50| in units of the stated 1-sigma error): the
    # shipped model underestimates disks at or below the PSF size by 15-30 % (1-2
    # sigma), see the model card; larger disks are measured within 1 sigma
    for r50, k_sigma in ((1.0, 2.0), (1.6, 1.0), (2.5, 1.0)):
        stamps = exponential_disk_stamps(r50, 8, pixel_scale=PIXSCALE)
        given = {"psf_fwhm": 1.1, "psf_beta": 3.5}  # the disks' Moffat PSF
        aux = [np.full((len(stamps), 4), given[v], np.float32) for v in lh.inputs]
        cols = to_columns(predict_structure(lh.module, stamps, aux), PIXSCALE)
        mean = float(np.mean(cols["r50"]))
        err = float(np.median(cols["r50_err"]))
        assert abs(mean - r50) < k_sigma * err, (r50, mean, err)
        assert err < 0.5 * r50
        assert float(np.median(np.abs(cols["e1"]))) < 0.1  # round
        assert float(np.median(np.abs(cols["e2"]))) < 0.1


@pytest.mark.skipif(not (SHIPPED / "card.json").is_file(), reason="no shipped structure model")
def test_disk_check_reports_catalog_columns_of_idealised_disks():
    """``disk_check`` measures the catalog's (calibrated) r50 and error of the disks.

    The shipped model with the card's calibration: -5.5 % (-0.9 sigma) at 1.0" and
    +1.2 % (+0.2 sigma) at 2.0" (FWHM 1.1"); the guard is loose (15 %, 3 sigma), the
    full grid is printed by ``benchmarks/morphology.py``.
    """
    pytest.importorskip("galsim")
    from tilecat.infer.registry import get_head
    from tilecat.structure.disk import disk_check, exponential_disk_stamps
    from tilecat.structure.train import to_columns

    head = get_head("structure")
    lh = head.load({"survey": {"pixel_scale": PIXSCALE}, "infer": {}}, torch.device("cpu"))
    rows = disk_check(head, lh, [1.0, 2.0], [1.1], pixel_scale=PIXSCALE)
    assert [(r["r50"], r["fwhm"]) for r in rows] == [(1.0, 1.1), (2.0, 1.1)]
    for row in rows:
        assert abs(row["rel"]) < 0.15 and abs(row["z"]) < 3.0, row
        assert row["z"] == pytest.approx((row["mean"] - row["r50"]) / row["err"])
    # the catalog's error is the card's calibrated one, not the network's own sigma
    stamps = exponential_disk_stamps(2.0, 8, pixel_scale=PIXSCALE)
    aux = [np.full((8, 4), {"psf_fwhm": 1.1, "psf_beta": 3.5}[v], np.float32)
           for v in lh.inputs]
    raw_err = float(np.median(to_columns(predict_structure(lh.module, stamps, aux),
                                         PIXSCALE)["r50_err"]))
    scale = lh.card["uncertainty_calibration"]["sigma_scale"][0]
    slope = lh.card["uncertainty_calibration"]["mean_slope"][0]
    assert rows[1]["err"] == pytest.approx(raw_err * scale * slope, rel=0.1)


def test_structure_sigma_scale_fit_and_head_applies_it():
    from tilecat.infer.heads import LoadedHead
    from tilecat.structure.calibrate import fit_sigma_scale
    from tilecat.structure.head import COLUMNS, HEAD

    rng = np.random.default_rng(0)
    n = 20000
    mu = np.zeros((n, 4))
    sigma = np.full((n, 4), 0.1)
    truth = rng.normal(0, [0.2, 0.1, 0.05, 0.1], size=(n, 4))  # true errors 2x, 1x, 0.5x, 1x
    truth[:10, 3] = np.nan
    scale = fit_sigma_scale(mu, sigma, truth)
    np.testing.assert_allclose(scale, [2.0, 1.0, 0.5, 1.0], rtol=0.03)
    within = np.mean(np.abs(truth[:, 0] - mu[:, 0]) < scale[0] * sigma[:, 0])
    assert abs(within - 0.683) < 0.01
    raw = np.concatenate([np.log(np.full((3, 1), 4.0)), np.zeros((3, 3)),
                          np.full((3, 4), 0.1)], axis=1)
    lh = LoadedHead(module=None, card={}, columns=COLUMNS,  # type: ignore[arg-type]
                    extra={"pixel_scale": 0.25, "sigma_scale": np.array(scale)})
    cols = HEAD.postprocess(raw, lh)
    np.testing.assert_allclose(cols["struct_r50"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(cols["struct_r50_err"], 1.0 * 0.1 * scale[0], rtol=1e-5)
    np.testing.assert_allclose(cols["struct_e1_err"], 0.1 * scale[2], rtol=1e-5)


def test_structure_mean_map_removes_shrinkage_and_head_applies_it():
    from tilecat.infer.heads import LoadedHead
    from tilecat.structure.calibrate import fit_mean_map
    from tilecat.structure.head import COLUMNS, HEAD

    rng = np.random.default_rng(1)
    n = 4000
    truth = np.stack([rng.normal(2.0, 0.5, n), rng.normal(0.5, 0.4, n),
                      rng.normal(0, 0.3, n), rng.normal(0, 0.3, n)], axis=1)
    # a shrunk, offset network: mu = 0.1 + 0.8 truth (+ Laplace noise); e: 0.85 e, no offset
    mu = np.empty_like(truth)
    mu[:, :2] = 0.1 + 0.8 * truth[:, :2] + rng.laplace(0, 0.03, (n, 2))
    mu[:, 2:] = 0.85 * truth[:, 2:] + rng.laplace(0, 0.01, (n, 2))
    truth[:5, 1] = np.nan
    icpt, slope = fit_mean_map(mu, truth)
    np.testing.assert_allclose(slope, [1 / 0.8, 1 / 0.8, 1 / 0.85, 1 / 0.85], rtol=0.02)
    np.testing.assert_allclose(icpt[:2], [-0.1 / 0.8] * 2, atol=0.02)
    assert icpt[2:] == [0.0, 0.0]
    mapped = np.asarray(icpt) + np.asarray(slope) * mu
    assert abs(np.nanmedian(mapped[:, 0] - truth[:, 0])) < 0.005
    assert abs(np.median(mu[:, 0] - truth[:, 0])) > 0.2  # it was biased
    # the head maps the raw means and scales sigma by |b| x sigma_scale
    raw = np.concatenate([np.log(np.full((3, 1), 4.0)), np.zeros((3, 3)),
                          np.full((3, 4), 0.1)], axis=1)
    lh = LoadedHead(module=None, card={}, columns=COLUMNS,  # type: ignore[arg-type]
                    extra={"pixel_scale": 0.25, "sigma_scale": np.full(4, 2.0),
                           "mean_intercept": np.array([0.1, 0.0, 0.0, 0.0]),
                           "mean_slope": np.array([1.1, 1.0, 1.2, 1.2])})
    cols = HEAD.postprocess(raw, lh)
    r50 = np.exp(0.1 + 1.1 * np.log(4.0)) * 0.25
    np.testing.assert_allclose(cols["struct_r50"], r50, rtol=1e-6)
    np.testing.assert_allclose(cols["struct_r50_err"], r50 * 0.1 * 1.1 * 2.0, rtol=1e-5)
    np.testing.assert_allclose(cols["struct_e1_err"], 0.1 * 1.2 * 2.0, rtol=1e-5)


def _tiny_stamp_set(path: Path, n: int = 48, size: int = 32, beta: bool = True) -> Path:
    """A small labelled stamp store (Gaussian blobs) with psf_fwhm and, optionally, psf_beta."""
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r50 = rng.uniform(0.5, 2.0, n)
    img = np.exp(-(xx**2 + yy**2)[None] / (2 * (r50[:, None, None] / PIXSCALE / 1.18) ** 2))
    stamps = np.arcsinh(20 * img[:, None] + rng.normal(size=(n, 4, size, size)))
    data = {"stamps": (("object", "band", "y", "x"), stamps.astype(np.float32)),
            "r50": (("object",), r50), "sersic_n": (("object",), rng.uniform(0.5, 4, n)),
            "e1": (("object",), rng.normal(0, 0.1, n)), "e2": (("object",), rng.normal(0, 0.1, n)),
            "snr": (("object",), rng.uniform(5, 100, n)),
            "psf_fwhm": (("object", "band"), rng.uniform(0.8, 1.6, (n, 4)))}
    if beta:
        data["psf_beta"] = (("object", "band"), rng.uniform(1.5, 4.5, (n, 4)))
    xr.Dataset(data, coords={"band": np.array(["g", "r", "i", "z"], dtype=object)},
               attrs={"bands": ["g", "r", "i", "z"], "pixel_scale": PIXSCALE, "seed": 1,
                      "heldout": False}).to_zarr(path, zarr_format=3, consolidated=False)
    return path


def test_train_structure_adds_beta_input_to_a_saved_model(tmp_path):
    """A warm start with arch psf_beta_input: the card asks for psf_beta, old sets refused."""
    from tilecat.errors import ConfigError, InputError
    from tilecat.structure.head import HEAD
    from tilecat.structure.train import train_structure

    st = _tiny_stamp_set(tmp_path / "s.zarr")
    arch = {k: v for k, v in TINY.items() if k != "psf_input"}
    quiet = {"epochs": 1, "batch_size": 16, "log": lambda s: None}
    old = train_structure(st, tmp_path / "old", arch=arch, **quiet)
    assert "psf_beta_input" not in old["arch"]
    new = train_structure(st, tmp_path / "new", init=tmp_path / "old", degrade_prob=0.5,
                          arch={"psf_beta_input": True}, **quiet)
    assert new["arch"] == {**old["arch"], "psf_beta_input": True}
    assert any("psf_beta" in s for s in new["extra_inputs"])
    lh = HEAD.load({"survey": {"pixel_scale": PIXSCALE},
                    "infer": {"model_dirs": {"structure": str(tmp_path / "new")}}},
                   torch.device("cpu"))
    assert lh.inputs == ("psf_fwhm", "psf_beta")
    with pytest.raises(ConfigError, match="hidden"):
        train_structure(st, tmp_path / "bad", init=tmp_path / "old",
                        arch={"hidden": 32}, **quiet)
    no_beta = _tiny_stamp_set(tmp_path / "nb.zarr", beta=False)
    with pytest.raises(InputError, match="psf_beta"):
        train_structure(no_beta, tmp_path / "x", init=tmp_path / "new", **quiet)


def test_size_weights_flatten_the_prior_and_weight_only_r50():
    """size_weights: rare sizes weigh more (mean 1, clipped); the NLL weight hits ln r50 only."""
    from tilecat.structure.train import size_weights

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(2.0, 0.3, 900), rng.uniform(3.0, 4.0, 100), [np.nan]])
    w = size_weights(x, power=1.0, max_weight=5.0, bins=12)
    assert w.dtype == np.float32 and w[-1] == 1.0
    assert abs(float(w[:-1].mean()) - 1.0) < 1e-5
    assert w[900:1000].mean() > 2 * w[:900].mean()  # the rare big ones weigh more
    assert w[:-1].max() <= 5.0 * np.median(w[:-1]) * (1 + 1e-5)
    assert np.all(size_weights(x, power=0.0) == 1.0)
    out = torch.tensor([[0.5, 0.0, 0.0, 0.0, -1.0, -1.0, -1.0, -1.0]] * 2)
    t = torch.tensor([[0.0, 0.3, 0.1, 0.1]] * 2)
    plain = gaussian_nll(out, t)
    wt = gaussian_nll(out, t, weight=torch.tensor([3.0, 1.0]))
    assert torch.allclose(wt[0], 2.0 * plain[0]) and torch.allclose(wt[1:], plain[1:])


def test_train_structure_size_weighting_recorded(tmp_path):
    """train_structure(size_weighting=...) trains (5-column targets) and records it."""
    from tilecat.structure.train import train_structure

    st = _tiny_stamp_set(tmp_path / "s.zarr")
    arch = {k: v for k, v in TINY.items() if k != "psf_input"}
    card = train_structure(st, tmp_path / "w", arch=arch, epochs=1, batch_size=16,
                           size_weighting={"power": 0.5, "max_weight": 4.0},
                           log=lambda s: None)
    assert "size_weights" in card["training"]["loss"]
    assert np.isfinite(card["training"]["history"][0]["val_loss"])
