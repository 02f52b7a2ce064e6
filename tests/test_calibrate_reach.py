"""Tree-consistent calibration maps (tilecat.calibrate.reach): P_T a fixed point of EM."""

from __future__ import annotations

import numpy as np

from tilecat.calibrate.calibrators import BiasTemperature, Temperature
from tilecat.calibrate.fit import fit_bcts
from tilecat.calibrate.reach import reach_offsets, tree_consistent
from tilecat.priors.em import PriorGroup, numpy_map_reduce, prepare_block, run_em

PATHS = {"parent": (), "child": (("parent", (0,)),)}


def _leaky_set(n: int = 20000, seed: int = 3) -> tuple[dict, dict]:
    """A two-question tree whose child outputs leak from the other branch.

    ``parent`` (answer 0 leads to ``child``) is a weak classifier; ``child`` (3 answers)
    is asked of parent-0 objects only, but the network answers for every object, and
    for parent-1 objects it says mostly answer 2 (an edge-on disk looks like a cigar).
    """
    rng = np.random.default_rng(seed)
    par = np.where(rng.random(n) < 0.3, 0, 1)  # 30% answer 0
    s = rng.normal(np.where(par == 0, 1.0, -1.0), 1.2)
    p0 = 1.0 / (1.0 + np.exp(-(2.0 * s / 1.44 + np.log(0.3 / 0.7))))
    child = np.where(par == 0, rng.choice(3, n, p=[0.5, 0.45, 0.05]), -1)
    logits = rng.normal(0.0, 1.0, (n, 3))
    logits[np.arange(n), np.where(par == 0, child, 2)] += 2.5
    pc = np.exp(logits)
    probs = {"parent": np.stack([p0, 1 - p0], axis=1), "child": pc / pc.sum(1, keepdims=True)}
    return probs, {"parent": np.where(par == 0, 0, 1), "child": child}


def _em_at(probs: dict, cals: dict, priors: dict) -> dict:
    block = prepare_block({k: cals[k].apply(v) for k, v in probs.items()}, np.float64)
    groups = [PriorGroup("parent", ("a", "b"), priors["parent"]),
              PriorGroup("child", ("r", "m", "c"), priors["child"], parents=(("parent", (0,)),))]
    return run_em(groups, numpy_map_reduce([block]), tol=1e-9, max_iter=2000).priors


def test_reach_offsets_match_the_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1.0, 2.0, 0.5], 500)
    w = rng.random(500)
    cal = BiasTemperature(1.3, (0.0, 0.2, -0.1))
    target = np.array([0.5, 0.3, 0.2])
    d = reach_offsets(cal, p, w, target)
    q = BiasTemperature(1.3, tuple(np.array(cal.bias) + d)).apply(p)
    assert d[0] == 0.0
    np.testing.assert_allclose((w[:, None] * q).sum(0) / w.sum(), target, atol=1e-9)


def test_tree_consistent_maps_make_the_training_prior_a_fixed_point_of_em() -> None:
    probs, y = _leaky_set()
    cals = {k: fit_bcts(probs[k][y[k] >= 0], y[k][y[k] >= 0]) for k in probs}
    priors = {k: np.bincount(y[k][y[k] >= 0], minlength=probs[k].shape[1]) / (y[k] >= 0).sum()
              for k in probs}
    before = _em_at(probs, cals, priors)
    # the leak: EM on the very set the maps were fitted on leaves the child's P_T
    assert before["child"][2] > priors["child"][2] * 1.3
    fixed = tree_consistent(cals, probs, priors, PATHS)
    assert fixed["parent"] is cals["parent"]  # the root keeps its map
    assert fixed["child"].temperature == cals["child"].temperature
    after = _em_at(probs, fixed, priors)
    # (the root's BCTS matches its fractions up to its small ridge on the biases)
    for k in probs:
        np.testing.assert_allclose(after[k], priors[k], atol=1e-3)
    assert abs(after["child"][2] - priors["child"][2]) < 0.05 * priors["child"][2]


def test_tree_consistent_leaves_maps_without_biases() -> None:
    probs, y = _leaky_set(2000)
    cals = {"parent": Temperature(1.0), "child": Temperature(1.2)}
    priors = {"parent": np.array([0.3, 0.7]), "child": np.array([0.5, 0.45, 0.05])}
    assert tree_consistent(cals, probs, priors, PATHS) == cals


def test_card_calibration_is_tree_consistent_on_its_labelled_set() -> None:
    """fit_card_calibration stores the offsets, and EM over the labelled set the card was
    fitted on (all questions jointly, tree weights) returns its labelled fractions."""
    from tilecat.calibrate.card import card_calibrators, card_priors, fit_card_calibration
    from tilecat.calibrate.selftest import tree_transfer_test
    from tilecat.morphology.tree import QUESTIONS
    from tilecat.photoz.grid import ZGrid
    from tilecat.priors import synthetic as syn
    from tilecat.priors.simsurvey import synthetic_cards

    grid = ZGrid()
    card = synthetic_cards(np.full(grid.n_bins, 1 / grid.n_bins), grid)["morphology"]
    rng = np.random.default_rng(11)
    targets = syn.draw_tree(8000, syn.TRAIN_MIX, rng)
    raw = syn.tree_outputs(targets, rng, separation={q: 1.5 for q in syn.SEPARATION})[0]
    y = {q.name: targets[:, j] for j, q in enumerate(QUESTIONS)}
    section = fit_card_calibration(card, raw, targets=y)
    groups = section["groups"]
    assert "tree_offset" not in groups["t"]  # the root
    assert all("tree_offset" in groups[q.name] for q in QUESTIONS if q.name != "t")
    fitted = {**card, "calibration": section}
    res = tree_transfer_test(card_calibrators(fitted), raw, y, card_priors(fitted))
    for q, r in res.items():
        np.testing.assert_allclose(r["em"], r["true"], atol=5e-4, err_msg=q)  # without: 2-6e-3
