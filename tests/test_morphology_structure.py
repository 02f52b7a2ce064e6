"""Tests of the structure network (loss, mirror equivariance) and of the shipped model."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tilecat.structure.model import MirrorAveraged, StructureNet, gaussian_nll  # noqa: E402
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


def _exponential_disk(r50: float, seed: int, flux: float = 1500.0, size: int = 64,
                      fwhm: float = 1.1) -> np.ndarray:
    """Round exponential disk (4 bands), Moffat PSF, unit noise, arcsinh-normalised."""
    galsim = pytest.importorskip("galsim")
    prof = galsim.Convolve(galsim.Exponential(half_light_radius=r50, flux=flux),
                           galsim.Moffat(beta=3.5, fwhm=fwhm))
    img = prof.drawImage(nx=size, ny=size, scale=PIXSCALE).array
    rng = np.random.default_rng(seed)
    stamp = img[None] + rng.normal(size=(4, size, size))
    return np.arcsinh(stamp).astype(np.float32)


@pytest.mark.skipif(not (SHIPPED / "card.json").is_file(), reason="no shipped structure model")
def test_shipped_model_measures_exponential_disk():
    """A round exponential disk of known r50 is measured within its stated uncertainty."""
    from tilecat.infer.registry import get_head
    from tilecat.morphology.fit import predict
    from tilecat.structure.train import to_columns

    head = get_head("structure")
    lh = head.load({"survey": {"pixel_scale": PIXSCALE}, "infer": {}}, torch.device("cpu"))
    # (r50 [arcsec], allowed |mean - r50| in units of the stated 1-sigma error): the
    # shipped model underestimates disks at or below the PSF size by 15-30 % (1-2
    # sigma), see the model card; larger disks are measured within 1 sigma
    for r50, k_sigma in ((1.0, 2.0), (1.6, 1.0), (2.5, 1.0)):
        stamps = np.stack([_exponential_disk(r50, seed) for seed in range(8)])
        aux = np.full((len(stamps), 4), 1.1, np.float32) if lh.inputs else None
        cols = to_columns(predict(lh.module, stamps, aux=aux), PIXSCALE)
        mean = float(np.mean(cols["r50"]))
        err = float(np.median(cols["r50_err"]))
        assert abs(mean - r50) < k_sigma * err, (r50, mean, err)
        assert err < 0.5 * r50
        assert float(np.median(np.abs(cols["e1"]))) < 0.1  # round
        assert float(np.median(np.abs(cols["e2"]))) < 0.1


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
