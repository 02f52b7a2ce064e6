"""Calibration: metrics (ECE, Brier, PIT, CRPS), calibration maps, `tilecat calibrate`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tilecat.calibrate.calibrators import Chain, Identity, PitMap, Temperature, from_dict
from tilecat.calibrate.fit import fit_calibrator, fit_isotonic, fit_pit_map, fit_temperature
from tilecat.calibrate.metrics import brier, ece, ks_distance, nll, pdf_scores, reliability
from tilecat.photoz.grid import ZGrid


def _exact(n: int, k: int, rng: np.random.Generator, sep: float = 1.5):
    """Labels and exact posteriors of a Gaussian mixture with equal priors (2-d features)."""
    ang = 2 * np.pi * np.arange(k) / k
    mu = sep * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    y = rng.integers(0, k, n)
    x = mu[y] + rng.standard_normal((n, 2))
    logp = -0.5 * ((x[:, None] - mu[None]) ** 2).sum(-1)
    logp -= logp.max(1, keepdims=True)
    p = np.exp(logp)
    return y, p / p.sum(1, keepdims=True), logp


def test_ece_hand_case():
    p = np.array([[0.9, 0.1], [0.9, 0.1]])
    y = np.array([0, 1])
    assert ece(p, y) == pytest.approx(0.4)  # confidence 0.9, accuracy 0.5
    rows = reliability(p, y)
    assert len(rows) == 1 and rows[0]["n"] == 2 and rows[0]["lo"] == pytest.approx(13 / 15)
    # two bins: |1.0 - 0.6| and |0.0 - 0.7| weighted 1/2 each
    p = np.array([[0.6, 0.4], [0.3, 0.7]])
    assert ece(p, np.array([0, 0])) == pytest.approx((0.4 + 0.7) / 2)


def test_ece_of_exact_posteriors_is_small_and_of_distorted_large():
    rng = np.random.default_rng(0)
    y, p, _ = _exact(40000, 3, rng)
    assert ece(p, y) < 0.01
    sharp = Temperature(0.5).apply(p)
    assert ece(sharp, y) > 0.05


def test_brier_and_nll_hand_cases():
    assert brier(np.array([[1.0, 0.0]]), np.array([0])) == 0.0
    assert brier(np.array([[0.5, 0.5]]), np.array([0])) == pytest.approx(0.5)
    assert brier(np.array([[0.0, 1.0]]), np.array([0])) == pytest.approx(2.0)
    assert nll(np.array([[0.25, 0.75]]), np.array([1])) == pytest.approx(-np.log(0.75))
    with pytest.raises(ValueError):
        brier(np.array([[0.5, 0.5]]), np.array([2]))


def test_temperature_fit_recovers_known_temperature():
    rng = np.random.default_rng(1)
    y, p, _ = _exact(30000, 4, rng)
    for t0 in (0.5, 2.0):
        distorted = Temperature(t0).apply(p)  # p^(1/t0)
        fitted = fit_temperature(distorted, y)
        assert fitted.temperature == pytest.approx(1.0 / t0, rel=0.05)
        assert ece(fitted.apply(distorted), y) < 0.01


def test_bcts_recovers_temperature_and_class_bias():
    from tilecat.calibrate.calibrators import BiasTemperature
    from tilecat.calibrate.fit import fit_bcts

    rng = np.random.default_rng(5)
    y, p, _ = _exact(30000, 3, rng)
    distorted = BiasTemperature(0.5, (0.0, 0.8, -0.5)).apply(p)  # sharper and biased
    assert ece(distorted, y) > 0.05
    fitted = fit_bcts(distorted, y)
    assert fitted.temperature == pytest.approx(2.0, rel=0.05)
    # the inverse map: log q = (2 log p + b) / 2 + b'  =>  b' = -b / 2
    assert fitted.bias[1] == pytest.approx(-0.4, abs=0.08)
    assert fitted.bias[2] == pytest.approx(0.25, abs=0.08)
    q = fitted.apply(distorted)
    assert ece(q, y) < 0.01
    # at the optimum the mean calibrated probability is the class frequency
    assert np.allclose(q.mean(0), np.bincount(y) / len(y), atol=2e-3)
    # temperature scaling alone cannot remove the bias: class balance stays off
    t_only = fit_temperature(distorted, y).apply(distorted)
    freq = np.bincount(y) / len(y)
    assert np.abs(t_only.mean(0) - freq).max() > 5 * np.abs(q.mean(0) - freq).max()


def test_temperature_apply_properties():
    p = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
    assert np.allclose(Temperature(1.0).apply(p), p)
    q = Temperature(2.0).apply(p)
    assert np.allclose(q.sum(1), 1.0) and q[0, 0] < 0.7 and q[1, 0] == 0.0
    assert np.argmax(q, 1).tolist() == np.argmax(p, 1).tolist()
    with pytest.raises(ValueError):
        Temperature(0.0)


def test_isotonic_improves_miscalibrated_probabilities():
    rng = np.random.default_rng(2)
    y, p, _ = _exact(20000, 3, rng)
    bad = Temperature(0.4).apply(p)
    iso = fit_isotonic(bad[:10000], y[:10000])
    assert ece(iso.apply(bad[10000:]), y[10000:]) < 0.4 * ece(bad[10000:], y[10000:])
    assert np.allclose(iso.apply(bad).sum(1), 1.0)


def test_calibrator_dicts_round_trip():
    rng = np.random.default_rng(3)
    y, p, _ = _exact(500, 3, rng)
    grid = ZGrid(0.0, 1.0, 10)
    from tilecat.calibrate.calibrators import BiasTemperature

    cals = [Identity(), Temperature(1.7), BiasTemperature(1.2, (0.0, 0.3, -0.1)),
            fit_isotonic(p, y),
            PitMap((0.0, 0.5, 1.0), (0.0, 0.3, 1.0)),
            Chain((BiasTemperature(0.9, tuple(np.linspace(0, 1, 10))),
                   PitMap((0.0, 0.5, 1.0), (0.0, 0.4, 1.0))))]
    for c in cals:
        back = from_dict(json.loads(json.dumps(c.to_dict())))
        assert back == c
        q = rng.dirichlet(np.ones(3 if not isinstance(c, (PitMap, Chain)) else 10), 20)
        assert np.array_equal(back.apply(q), c.apply(q))
    assert isinstance(from_dict(None), Identity)
    with pytest.raises(ValueError):
        from_dict({"kind": "platt"})
    with pytest.raises(ValueError):  # no nested chains
        from_dict({"kind": "chain", "steps": [cals[-1].to_dict()]})
    with pytest.raises(ValueError):
        fit_calibrator("platt", p, y)
    with pytest.raises(ValueError):
        fit_calibrator("pit", p, y)  # needs a grid and redshifts
    assert grid.n_bins == 10


def test_pit_and_crps_hand_cases():
    grid = ZGrid(0.0, 1.5, 3)
    p = np.full((1, 3), 1 / 3)  # uniform density on [0, 1.5]
    sc = pdf_scores(np.repeat(p, 3, axis=0), grid, np.array([0.75, 0.75, 0.75]))
    # CDF at the middle is 1/2; CRPS of U(a, b) at its midpoint is (b - a) / 12
    from tilecat.photoz.metrics import crps, pit

    assert pit(p, grid, np.array([0.75]))[0] == pytest.approx(0.5)
    assert crps(p, grid, np.array([0.75]))[0] == pytest.approx(1.5 / 12)
    assert sc["crps"] == pytest.approx(1.5 / 12)
    # all mass in the first bin, truth at its upper edge: PIT = 1
    assert pit(np.array([[1.0, 0, 0]]), grid, np.array([0.5]))[0] == pytest.approx(1.0)
    assert ks_distance(np.array([1.0, 0, 0]), np.array([0, 0, 1.0])) == pytest.approx(1.0)


def test_pit_map_and_pdf_temperature_make_pit_uniform():
    from tilecat.priors.synthetic import draw_z, nz_shape, photoz_outputs

    rng = np.random.default_rng(4)
    grid = ZGrid()
    nz = np.maximum(nz_shape(grid, 0.4), 1e-6)
    z = draw_z(12000, nz, grid, rng)
    raw, _ = photoz_outputs(z, nz / nz.sum(), grid, rng, temperature=0.6)
    before = pdf_scores(raw, grid, z)["pit_ks"]
    assert before > 0.05
    for cal in (fit_pit_map(raw[:6000], grid, z[:6000]),
                fit_calibrator("temperature", raw[:6000], grid=grid, z_true=z[:6000])):
        after = pdf_scores(cal.apply(raw[6000:]), grid, z[6000:])
        assert after["pit_ks"] < 0.03, cal
        assert np.allclose(cal.apply(raw[:5]).sum(1), 1.0)


def test_bcts_pit_makes_pdfs_posteriors_under_the_labelled_nz():
    """PDFs computed with the wrong N(z) prior (and too sharp): the PIT map alone makes
    the PIT uniform but their sum still follows the wrong N(z); BCTS + PIT (the default
    PDF map) also brings the mean calibrated PDF onto the true N(z), which is what EM
    prior estimation starts from and needs."""
    from tilecat.calibrate.selftest import em_self_test
    from tilecat.priors.formula import implied_prior
    from tilecat.priors.synthetic import draw_z, nz_shape, photoz_outputs

    rng = np.random.default_rng(5)
    grid = ZGrid()
    nz = np.maximum(nz_shape(grid, 0.2), 1e-6)
    wrong = np.maximum(nz_shape(grid, 0.8), 1e-6)
    z = draw_z(12000, nz / nz.sum(), grid, rng)
    raw, _ = photoz_outputs(z, wrong / wrong.sum(), grid, rng, sigma=0.1)
    a, b = slice(0, 6000), slice(6000, None)
    true = grid.histogram(z[b])
    pit_only = fit_calibrator("pit", raw[a], grid=grid, z_true=z[a])
    both = fit_calibrator("bcts+pit", raw[a], grid=grid, z_true=z[a])
    assert isinstance(both, Chain) and [s.kind for s in both.steps] == ["bcts", "pit"]
    ks_pit = ks_distance(implied_prior(pit_only.apply(raw[b])), true)
    ks_both = ks_distance(implied_prior(both.apply(raw[b])), true)
    assert ks_both < 0.03 and ks_both < 0.6 * ks_pit, (ks_both, ks_pit)  # 0.024, 0.049
    assert pdf_scores(both.apply(raw[b]), grid, z[b])["pit_ks"] < 0.03
    # and EM, run as the self-test does, lands nearer the labelled N(z)
    st = {m: em_self_test(m, raw, wrong, grid=grid, z_true=z, implicit=True)["error"]
          for m in ("pit", "bcts+pit")}
    assert st["bcts+pit"] < 0.6 * st["pit"], st  # 0.018, 0.039
    with pytest.raises(ValueError):
        fit_calibrator("bcts+pit", raw[a], np.zeros(6000, int))  # needs grid and z_true


def test_run_calibrate_from_parquet(tmp_path):
    """`tilecat calibrate` on a labelled Parquet: card gets calibration, weights untouched."""
    from tilecat.cli import main
    from tilecat.models import load_card
    from tilecat.priors import synthetic as syn
    from tilecat.priors.simsurvey import write_synthetic_survey

    s = write_synthetic_survey(tmp_path / "s", mix=syn.TRAIN_MIX,
                               nz=syn.nz_shape(ZGrid(), 0.35), n_tiles=1, per_tile=10,
                               n_labelled=4000, temperature=0.5, z_temperature=0.6)
    (s.models["morphology"] / "weights.safetensors").write_bytes(b"fake weights")
    out = tmp_path / "recal"
    assert main(["calibrate", str(s.models["morphology"]), "--data", str(s.labelled),
                 "--out", str(out)]) == 0
    card = load_card(out)
    assert (out / "weights.safetensors").read_bytes() == b"fake weights"
    assert "calibration" not in load_card(s.models["morphology"])  # source untouched
    cal = card["calibration"]
    assert set(cal["groups"]) == {"t", "edge_on", "spiral_arms", "spin", "bar", "bulge_size",
                                  "merger", "roundness"}
    assert cal["groups"]["t"]["kind"] == "bcts"  # the default map of class probabilities
    assert cal["groups"]["t"]["temperature"] == pytest.approx(2.0, rel=0.1)
    assert np.abs(cal["groups"]["t"]["bias"]).max() < 0.2  # the exact classifier has no bias
    assert cal["groups"]["t"]["prior"] == pytest.approx([0.35, 0.5, 0.15], abs=0.03)
    assert cal["metrics"]["t"]["em_self_test"]["ok"]
    assert cal["metrics"]["t"]["after"]["ece"] < cal["metrics"]["t"]["before"]["ece"]
    assert cal["fitted_on"]["n_objects"] == 4000
    # photo-z in place, PIT map
    assert main(["calibrate", str(s.models["photoz"]), "--data", str(s.labelled),
                 "--pdf-method", "pit"]) == 0
    zc = load_card(s.models["photoz"])["calibration"]
    assert zc["groups"]["z"]["kind"] == "pit"
    assert zc["metrics"]["z"]["after"]["pit_ks"] < 0.5 * zc["metrics"]["z"]["before"]["pit_ks"]
    assert zc["metrics"]["z"]["em_self_test"]["ok"]
    # the calibrated PDFs carry their own N(z): the mean calibrated PDF of the labelled set
    from tilecat.calibrate.card import card_priors

    zprior = np.asarray(zc["groups"]["z"]["prior"])
    assert zprior.shape == (len(ZGrid().centres),) and zprior.sum() == pytest.approx(1.0, abs=1e-6)
    assert card_priors(load_card(s.models["photoz"]))["z"] == pytest.approx(zprior / zprior.sum())
    # with a check set (here the labelled set itself): the transfer test is stored too
    from tilecat.calibrate import run_calibrate

    zc = run_calibrate(s.models["photoz"], s.labelled, check=s.labelled,
                       log=lambda msg: None)["calibration"]
    assert zc["metrics"]["z"]["em_transfer_test"]["ok"]
    assert zc["fitted_on"]["check"]["n_objects"] == 4000


def test_run_calibrate_errors(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tilecat.cli import main
    from tilecat.priors.simsurvey import synthetic_cards
    from tilecat.calibrate.run import write_card

    grid = ZGrid()
    d = tmp_path / "m"
    d.mkdir()
    write_card(synthetic_cards(np.full(grid.n_bins, 1 / grid.n_bins), grid)["morphology"], d)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"morph_t_smooth_raw": [0.5]}), bad)
    assert main(["calibrate", str(d), "--data", str(bad)]) == 2
    assert "lacks model output column" in capsys.readouterr().err
    assert main(["calibrate", str(d), "--data", str(tmp_path / "none.parquet")]) == 2
    assert main(["calibrate", str(tmp_path / "nomodel"), "--data", str(bad)]) == 2
    assert "no card.json" in capsys.readouterr().err


def test_em_transfer_test_catches_a_map_that_does_not_carry_over():
    """Maps fitted on one labelled set; EM on a check set: passes when the check set's
    outputs behave like the calibration set's, fails where they are biased (other
    observing conditions), and the card records it."""
    from tilecat.calibrate.card import fit_card_calibration
    from tilecat.calibrate.labelled import Labelled
    from tilecat.morphology.tree import QUESTIONS
    from tilecat.priors import synthetic as syn
    from tilecat.priors.simsurvey import synthetic_cards

    grid = ZGrid()
    card = synthetic_cards(np.full(grid.n_bins, 1 / grid.n_bins), grid)["morphology"]
    rng = np.random.default_rng(5)
    separation = {q: 1.5 for q in syn.SEPARATION}  # overlapping classes: EM is sensitive

    def labelled(n, bias=None):
        targets = syn.draw_tree(n, syn.TRAIN_MIX, rng)
        raw = syn.tree_outputs(targets, rng, separation=separation)[0]
        if bias:  # the first answer of these questions looks 3x more likely than it is
            for q in bias:
                p = raw[q].copy()
                p[:, 0] *= 3.0
                raw[q] = p / p.sum(axis=1, keepdims=True)
        return Labelled(probs=raw, targets={q.name: targets[:, j]
                                            for j, q in enumerate(QUESTIONS)},
                        source={"path": "check", "n_objects": n})

    cal = labelled(6000)
    same = fit_card_calibration(card, cal.probs, targets=cal.targets, check=labelled(6000))
    assert same["fitted_on"]["check"]["path"] == "check"
    tests = {q: m["em_transfer_test"] for q, m in same["metrics"].items()}
    assert set(tests) == {q.name for q in QUESTIONS}
    assert all(t["ok"] for t in tests.values()), tests
    shifted = fit_card_calibration(card, cal.probs, targets=cal.targets,
                                   check=labelled(6000, bias=("merger", "bulge_size")))
    tests = {q: m["em_transfer_test"] for q, m in shifted["metrics"].items()}
    assert not tests["merger"]["ok"] and not tests["bulge_size"]["ok"]
    assert tests["merger"]["error"] > tests["merger"]["tolerance"]
    assert tests["t"]["ok"] and tests["edge_on"]["ok"]
    # the self-test (one labelled set) cannot see it
    assert shifted["metrics"]["merger"]["em_self_test"]["ok"]


def test_implied_prior_is_the_em_fixed_point():
    """Calibrated posteriors of a known two-Gaussian mixture: their mean is the class
    mix, and EM started there on the same objects does not move."""
    from tilecat.priors.formula import implied_prior
    from tilecat.priors.em import em_priors

    rng = np.random.default_rng(3)
    y = (rng.random(20000) < 0.3).astype(int)
    x = rng.normal(2.0 * y, 1.0)
    like = np.stack([np.exp(-0.5 * x ** 2), np.exp(-0.5 * (x - 2.0) ** 2)], axis=1)
    q = like * [0.7, 0.3]
    q /= q.sum(1, keepdims=True)
    pi = implied_prior(q)
    assert pi == pytest.approx([0.7, 0.3], abs=0.01)
    res = em_priors(q, pi, tol=1e-9, max_iter=100)
    assert res.priors["p"] == pytest.approx(pi, abs=1e-4)
    # a flat floor keeps empty bins movable
    assert implied_prior(np.array([[1.0, 0.0]])).min() > 0
