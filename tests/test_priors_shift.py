"""The shift test that gates EM estimates ("detect, then correct", tilecat.priors.em)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tilecat.morphology.tree import QUESTIONS
from tilecat.photoz.grid import ZGrid
from tilecat.priors import synthetic as syn
from tilecat.priors.em import (PriorGroup, block_stats, dask_map_reduce, em_priors,
                               numpy_map_reduce, prepare_block, run_em, shift_test, stats_size)
from tilecat.priors.tree import parents


def _tree(n: int, mix, seed: int):
    rng = np.random.default_rng(seed)
    targets = syn.draw_tree(n, mix, rng)
    _, exact = syn.tree_outputs(targets, rng)
    answers = {q.name: q.answers for q in QUESTIONS}
    groups = [PriorGroup(q.name, q.answers,
                         np.array([syn.TRAIN_MIX[q.name][a] for a in q.answers]),
                         parents=parents(q.name, answers), strength=10.0) for q in QUESTIONS]
    return groups, exact


def _nz(n: int, z0: float, seed: int, weights: bool = False):
    rng = np.random.default_rng(seed)
    grid = ZGrid()
    nzt = syn.nz_shape(grid, 0.35)
    z = syn.draw_z(n, syn.nz_shape(grid, z0), grid, rng)
    _, exact = syn.photoz_outputs(z, nzt, grid, rng)
    return exact, nzt, (rng.random(n) if weights else None)


def test_lr_is_small_under_the_training_prior_and_large_under_a_shift():
    p = np.random.default_rng(0).dirichlet([2.0, 2.0, 2.0], 3000)
    # data generated so that the calibrated outputs fit P_T exactly: the EM fixed point
    # is (close to) P_T and the statistic is ~0
    res = em_priors(p, np.mean(p, axis=0), tol=1e-10, shift_alpha=0.01)
    t = res.tests["p"]
    assert t["test"] == "likelihood ratio" and t["dof"] == 2
    assert t["statistic"] < 1e-6 and t["p_value"] > 0.99 and t["gated"]
    assert t["n_eff"] == pytest.approx(3000)
    # the tree with the training mix vs the shifted mix (mergers 10x rarer, edge-on 3x)
    groups, exact = _tree(8000, syn.TRAIN_MIX, 1)
    block = [prepare_block(exact)]
    null = run_em(groups, numpy_map_reduce(block), tol=1e-7, shift_alpha=0.01)
    groups, exact = _tree(8000, syn.shifted_mix(), 1)
    alt = run_em(groups, numpy_map_reduce([prepare_block(exact)]), tol=1e-7, shift_alpha=0.01)
    for q in ("merger", "edge_on"):
        assert null.tests[q]["statistic"] < 10 and null.tests[q]["gated"], q
        assert alt.tests[q]["statistic"] > 100 and alt.tests[q]["p_value"] < 1e-10, q
        assert not alt.tests[q]["gated"]
    assert all(v["dof"] == len(g.labels) - 1 and v["loglik_gain"] >= -1e-9
               for g in groups for v in [alt.tests[g.name]])


def test_lr_null_is_chi2_for_classes():
    """Exact classifier, training mix: p-values roughly uniform (size of the test)."""
    pvals = []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        y = rng.choice(2, 2000, p=[0.2, 0.8])
        x = rng.standard_normal(2000) + 1.5 * y
        lr = np.exp(1.5 * x - 1.125) * 0.8 / 0.2
        p = np.stack([1 / (1 + lr), lr / (1 + lr)], axis=1)
        pvals.append(em_priors(p, [0.2, 0.8], tol=1e-10, shift_alpha=0.0).tests["p"]["p_value"])
    pvals = np.array(pvals)
    assert (pvals < 0.05).mean() <= 0.15 and 0.3 < np.median(pvals) < 0.75


def test_tilt_score_for_nz_null_and_shift():
    exact, nzt, _ = _nz(5000, 0.35, 2)
    null = em_priors(exact, nzt, tol=1e-6, smooth=1, strength=1000, shift_alpha=0.01,
                     tilt_degree=2)
    t = null.tests["p"]
    assert t["test"] == "tilt score (degree 2)" and t["dof"] == 2
    assert t["gated"] and t["statistic"] < 9.2  # chi2(2) 99% quantile
    assert np.allclose(null.priors["p"], nzt, rtol=1e-12, atol=0)  # P_T (renormalised)
    exact, nzt, _ = _nz(5000, 0.37, 2)  # N(z) scale 6% larger
    alt = em_priors(exact, nzt, tol=1e-6, smooth=1, strength=1000, shift_alpha=0.01,
                    tilt_degree=2)
    assert alt.tests["p"]["statistic"] > 30 and not alt.tests["p"]["gated"]
    assert not np.array_equal(alt.priors["p"], nzt)
    # the full-K likelihood ratio of the smoothed EM estimate has no power here
    lr = em_priors(exact, nzt, tol=1e-6, smooth=1, strength=1000, shift_alpha=0.01)
    assert lr.tests["p"]["test"] == "likelihood ratio" and lr.tests["p"]["dof"] == 59


def test_tilt_statistics_match_a_direct_computation():
    exact, nzt, w = _nz(3000, 0.4, 3, weights=True)
    g = PriorGroup("z", tuple(str(i) for i in range(len(nzt))), nzt, tilt_degree=2)
    blocks = [prepare_block({"z": exact[i:i + 700]}, np.float64) for i in range(0, 3000, 700)]
    wblocks = [{"z": b["z"]} for b in blocks]
    # weights through a fixed two-class parent, as em_priors does
    parent = PriorGroup("_w", ("w", "rest"), np.array([0.5, 0.5]), estimate=False)
    gw = dataclasses.replace(g, parents=(("_w", (0,)),))
    for b, i in zip(wblocks, range(0, 3000, 700)):
        ww = w[i:i + 700]
        b["_w"] = np.stack([ww, 1 - ww], axis=1)
    priors = {"z": nzt, "_w": parent.prior_train}
    stats = numpy_map_reduce(wblocks)([parent, gw], priors, test=True)["z"]
    assert stats.shape == (stats_size(gw, True),) and stats_size(gw) == len(nzt) + 2
    got = shift_test(stats, gw, 0.01)
    # direct: U = sum w (m - E_T f), V = sum w^2 (m - mbar)(m - mbar)^T
    # features: Legendre polynomials P1, P2 of the training mid-bin CDF mapped to [-1, 1]
    pt = gw.prior_train
    t = 2 * (np.cumsum(pt) - pt / 2) - 1
    f = np.stack([t, 1.5 * t ** 2 - 0.5], axis=1)
    m = exact @ f
    u = w @ (m - pt @ f)
    mbar = w @ m / w.sum()
    v = ((m - mbar) * (w ** 2)[:, None]).T @ (m - mbar)
    assert got["statistic"] == pytest.approx(float(u @ np.linalg.solve(v, u)), rel=1e-8)
    # without test the statistics are the EM ones only
    assert block_stats(blocks[0], [g], {"z": nzt})["z"].shape == (len(nzt) + 2,)


def test_gate_keeps_training_prior_and_reruns_children():
    # make merger clearly shifted while the rest follows the training mix
    mix = {q: dict(v) for q, v in syn.TRAIN_MIX.items()}
    mix["merger"] = {"yes": 0.02, "no": 0.98}
    groups, exact = _tree(6000, mix, 4)
    blocks = [prepare_block({k: v[i:i + 2000] for k, v in exact.items()})
              for i in range(0, 6000, 2000)]
    mr = numpy_map_reduce(blocks)
    plain = run_em(groups, mr, tol=1e-7)
    assert plain.tests == {}
    gated = run_em(groups, mr, tol=1e-7, shift_alpha=0.01)
    kept = [g.name for g in groups if gated.tests[g.name]["gated"]]
    assert "merger" not in kept and "t" in kept
    for g in groups:
        if g.name in kept:
            assert np.array_equal(gated.priors[g.name], g.prior_train), g.name
        else:
            assert not np.array_equal(gated.priors[g.name], g.prior_train), g.name
    # the children were re-estimated with the reset parents fixed: the same as EM run
    # from the start with those groups not estimated
    fixed = [dataclasses.replace(g, estimate=False) if g.name in kept else g for g in groups]
    ref = run_em(fixed, mr, tol=1e-7)
    assert np.allclose(gated.priors["merger"], ref.priors["merger"], atol=1e-5)
    # 0 records the tests but uses every estimate
    off = run_em(groups, mr, tol=1e-7, shift_alpha=0.0)
    assert not any(t["gated"] for t in off.tests.values())
    for g in groups:
        assert np.array_equal(off.priors[g.name], plain.priors[g.name])
    # Dask gives the same tests and priors (fixed reduction order)
    import dask

    with dask.config.set(scheduler="threads", num_workers=2):
        delayed = list(dask.persist(*[dask.delayed(lambda b: b)(b) for b in blocks]))
        res_d = run_em(groups, dask_map_reduce(delayed), tol=1e-7, shift_alpha=0.01)
    assert res_d.tests == gated.tests
    for q in gated.priors:
        assert np.array_equal(res_d.priors[q], gated.priors[q]), q


def test_prior_group_checks_tilt_degree():
    with pytest.raises(ValueError, match="tilt_degree"):
        PriorGroup("z", ("a", "b"), np.array([0.5, 0.5]), tilt_degree=2)
