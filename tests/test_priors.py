"""Prior correction: the formula, EM (numpy and Dask), the tree, config priors, the aggregate."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tilecat.errors import ConfigError, InputError, ModelError
from tilecat.photoz.grid import ZGrid
from tilecat.priors import synthetic as syn
from tilecat.priors.em import (PriorGroup, dask_map_reduce, em_priors, numpy_map_reduce,
                               prepare_block, run_em, smooth_prior)
from tilecat.priors.formula import correct, correct_binary, prior_weights
from tilecat.priors.tree import MORPHOLOGY_PATHS, parents


def test_formula_hand_case():
    p = np.array([[0.2, 0.8], [0.5, 0.5]])
    out = correct(p, [0.5, 0.5], [0.2, 0.8])
    # w = (0.4, 1.6): (0.08, 1.28) / 1.36 and (0.2, 0.8)
    assert np.allclose(out[0], [0.08 / 1.36, 1.28 / 1.36])
    assert np.allclose(out[1], [0.2, 0.8])
    # three classes, class axis first
    q = correct(np.array([[0.5], [0.25], [0.25]]), [0.25, 0.25, 0.5], [0.5, 0.25, 0.25], axis=0)
    assert np.allclose(q[:, 0], np.array([1.0, 0.25, 0.125]) / 1.375)


def test_formula_identity_when_priors_equal():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), 100)
    pt = rng.dirichlet(np.ones(5))
    assert np.allclose(correct(p, pt, pt), p, atol=1e-15)
    assert np.allclose(correct(p, pt, 3 * pt), p, atol=1e-15)  # only ratios matter


def test_formula_two_class_form_and_errors():
    p = np.linspace(0, 1, 11, dtype=np.float32)
    k = correct(np.stack([p, 1 - p], axis=1), [0.3, 0.7], [0.05, 0.95])[:, 0]
    assert np.allclose(correct_binary(p, 0.3, 0.05), k, atol=1e-6)
    with pytest.raises(ValueError, match="training prior 0"):
        prior_weights([0.0, 1.0], [0.1, 0.9])
    assert np.array_equal(prior_weights([0.0, 1.0], [0.0, 1.0]), [0.0, 1.0])
    # a row impossible under the new priors falls back to the new prior
    assert np.allclose(correct(np.array([[1.0, 0.0]]), [0.5, 0.5], [0.0, 1.0]), [[0.0, 1.0]])


def test_masker_uses_the_same_formula():
    from tilecat.mask import priors as mask_priors

    assert mask_priors.correct_binary is correct_binary


def test_em_recovers_known_priors():
    rng = np.random.default_rng(1)
    k, n = 3, 40000
    pt = np.array([1 / 3, 1 / 3, 1 / 3])
    true = np.array([0.7, 0.25, 0.05])
    mu = 1.8 * np.stack([np.cos(2 * np.pi * np.arange(k) / k),
                         np.sin(2 * np.pi * np.arange(k) / k)], axis=1)
    y = rng.choice(k, n, p=true)
    x = mu[y] + rng.standard_normal((n, 2))
    logp = -0.5 * ((x[:, None] - mu[None]) ** 2).sum(-1) + np.log(pt)
    p = np.exp(logp - logp.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    res = em_priors(p, pt, tol=1e-9)
    assert res.converged and res.n_iter > 3
    assert np.allclose(res.priors["p"], np.bincount(y) / n, rtol=0.06)
    lls = [r["loglik"]["p"] for r in res.log]
    assert all(b >= a - 1e-6 for a, b in zip(lls, lls[1:]))  # EM never decreases L
    # weights: objects with weight 0 do not count
    w = (y != 2).astype(float)
    res_w = em_priors(p, pt, weights=w, tol=1e-9)
    assert res_w.priors["p"][2] < 0.5 * res.priors["p"][2]


def test_em_on_the_tree_recovers_shifted_mix_numpy_equals_dask():
    import dask

    from tilecat.morphology.tree import QUESTIONS

    rng = np.random.default_rng(2)
    mix = syn.shifted_mix()
    targets = syn.draw_tree(30000, mix, rng)
    _, exact = syn.tree_outputs(targets, rng)
    answers = {q.name: q.answers for q in QUESTIONS}
    groups = [PriorGroup(q.name, q.answers,
                         np.array([syn.TRAIN_MIX[q.name][a] for a in q.answers]),
                         parents=parents(q.name, answers)) for q in QUESTIONS]
    blocks = [prepare_block({k: v[i:i + 7000] for k, v in exact.items()})
              for i in range(0, 30000, 7000)]
    res = run_em(groups, numpy_map_reduce(blocks, fan_in=2), tol=1e-7)
    true = syn.answer_fractions(targets)
    assert res.converged
    for q in ("t", "edge_on", "merger"):
        assert np.allclose(res.priors[q], true[q], rtol=0.1), q
    assert res.priors["merger"][0] < 0.05 < syn.TRAIN_MIX["merger"]["yes"]
    with dask.config.set(scheduler="threads", num_workers=2):
        delayed = list(dask.persist(*[dask.delayed(lambda b: b)(b) for b in blocks]))
        res_d = run_em(groups, dask_map_reduce(delayed, fan_in=2), tol=1e-7)
    assert res_d.n_iter == res.n_iter
    for q in res.priors:
        assert np.array_equal(res.priors[q], res_d.priors[q]), q


def test_given_and_fixed_groups_are_not_estimated():
    g = PriorGroup("a", ("x", "y"), np.array([0.5, 0.5]), given=np.array([2.0, 8.0]))
    assert g.source == "given" and np.allclose(g.initial(), [0.2, 0.8])
    res = run_em([g], numpy_map_reduce([{"a": np.array([[0.9, 0.1]])}]))
    assert res.n_iter == 0 and res.converged and np.allclose(res.priors["a"], [0.2, 0.8])
    with pytest.raises(ValueError):
        PriorGroup("a", ("x", "y"), np.array([1.0, 0.0]), given=np.array([0.5, 0.5]))


def test_smoothed_em_for_nz():
    p = smooth_prior(np.array([0.0, 0.0, 1.0, 0.0, 0.0]), 1)
    assert np.allclose(p, [0, 0.25, 0.5, 0.25, 0]) and p.sum() == pytest.approx(1)
    rng = np.random.default_rng(3)
    grid = ZGrid()
    nzt = np.maximum(syn.nz_shape(grid, 0.35), 1e-6)
    nzt /= nzt.sum()
    nzs = syn.nz_shape(grid, 0.5)
    z = syn.draw_z(20000, nzs, grid, rng)
    _, exact = syn.photoz_outputs(z, nzt, grid, rng)
    res = em_priors(exact, nzt, tol=1e-6, smooth=1)
    assert res.converged and res.n_iter < 200
    truth = grid.histogram(z)
    ks = lambda a, b: np.abs(np.cumsum(a) - np.cumsum(b)).max()  # noqa: E731
    assert ks(res.priors["p"], truth) < 0.4 * ks(exact.sum(0) / len(z), truth)


def test_tree_paths_agree_with_truth_rules():
    from tilecat.morphology.labels import applies, encode
    from tilecat.morphology.tree import QUESTIONS

    rng = np.random.default_rng(4)
    targets = syn.draw_tree(3000, syn.TRAIN_MIX, rng)
    from tilecat.morphology.labels import decode

    truth = decode(targets)
    want = applies(truth["t_class"], truth["edge_on"], truth["spiral_arms"], truth["merger"])
    assert np.array_equal(encode(truth), targets)
    names = [q.name for q in QUESTIONS]
    for q in QUESTIONS:
        got = np.ones(len(targets), bool)
        for parent, lead in MORPHOLOGY_PATHS[q.name]:
            pq_ = QUESTIONS[names.index(parent)]
            got &= np.isin(targets[:, names.index(parent)], [pq_.answers.index(a) for a in lead])
        assert np.array_equal(got, want[q.name]), q.name


def test_given_priors_from_config():
    from tilecat.calibrate.groups import card_groups
    from tilecat.priors.given import given_priors, nz_on_grid
    from tilecat.priors.simsurvey import synthetic_cards

    grid = ZGrid(0.0, 1.0, 4)
    cards = synthetic_cards(np.full(4, 0.25), grid)
    groups = card_groups(cards["morphology"]) + card_groups(cards["photoz"])
    got = given_priors({"merger": {True: 1, "no": 9}, "z": [1, 1, 2, 0]}, groups, grid)
    assert np.allclose(got["merger"], [0.1, 0.9]) and np.allclose(got["z"], [0.25, 0.25, 0.5, 0])
    assert np.allclose(nz_on_grid({"z": [0.0, 0.5, 1.0], "n": [1.0, 1.0, 1.0]}, grid), 0.25)
    for bad, msg in (({"mergers": {"yes": 1}}, "unknown question"),
                     ({"merger": {"yes": 1}}, "missing"),
                     ({"merger": {"yes": -1, "no": 1}}, ">= 0"),
                     ({"z": [1, 2]}, "4 redshift bins")):
        with pytest.raises(ConfigError, match=msg):
            given_priors(bad, groups, grid)


# ----------------------------------------------------------------- the aggregate step
@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    from tilecat.calibrate import run_calibrate
    from tilecat.priors.simsurvey import write_synthetic_survey

    root = tmp_path_factory.mktemp("priors")
    s = write_synthetic_survey(root / "s", mix=syn.shifted_mix(),
                               nz=syn.nz_shape(ZGrid(), 0.5), n_tiles=3, per_tile=3000,
                               n_labelled=6000)
    for m in ("morphology", "photoz"):
        run_calibrate(s.models[m], s.labelled, log=lambda msg: None)
    return s


def _aggregate(s, tmp_path, **sections):
    import yaml

    from tilecat.aggregate import run_aggregate
    from tilecat.config import load_config

    cfg = yaml.safe_load(s.config.read_text())
    cfg["results"] = str(tmp_path / "results")
    import shutil

    shutil.copytree(s.root / "results" / "tiles", tmp_path / "results" / "tiles")
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return run_aggregate(load_config(path))


def test_aggregate_adds_cal_post_columns_and_priors(survey, tmp_path):
    from tilecat.parquetmeta import read_descriptions

    out = _aggregate(survey, tmp_path)
    table = pq.read_table(out)
    names = table.column_names
    for suffix in ("raw", "cal", "post"):
        assert f"morph_merger_yes_{suffix}" in names
    for c in ("z_pdf", "z_pdf_cal", "z_pdf_post", "z_mean_post", "z_odds_post"):
        assert c in names
    assert table.schema.field("z_pdf_post").type == table.schema.field("z_pdf").type
    assert str(table.schema.field("z_pdf_post").type.value_type) == "halffloat"
    meta = json.loads(table.schema.metadata[b"tilecat.priors"])
    assert meta["em"]["converged"] and meta["groups"]["merger"]["source"] == "em"
    truth = pq.read_table(survey.truth)
    from tilecat.morphology.labels import encode
    from tilecat.qa.scores import true_fractions

    targets = encode({c: np.asarray(truth[c].to_pylist()) for c in
                      ("t_class", "edge_on", "spiral_arms", "spin", "bar", "bulge_size",
                       "merger", "roundness")})
    true = true_fractions(targets)
    assert meta["groups"]["merger"]["used"][0] == pytest.approx(true["merger"][0], rel=0.35)
    assert meta["groups"]["edge_on"]["used"][0] == pytest.approx(true["edge_on"][0], rel=0.1)
    cal = json.loads(table.schema.metadata[b"tilecat.calibration"])
    assert cal["morphology"]["groups"]["t"]["kind"] == "bcts"
    desc = read_descriptions(out)
    assert "prior-corrected" in desc["morph_t_smooth_post"]
    # the posteriors sum to one per question and stay probabilities
    post = np.stack([table[f"morph_t_{a}_post"].to_numpy() for a in
                     ("smooth", "featured", "artifact")], 1)
    assert np.allclose(post.sum(1), 1.0, atol=1e-5)
    # deterministic: a second run gives the same bytes
    from tilecat.aggregate import run_aggregate
    from tilecat.config import load_config

    first = out.read_bytes()
    assert run_aggregate(load_config(tmp_path / "config.yaml")).read_bytes() == first


def test_aggregate_records_the_shift_test(survey, tmp_path):
    """Detect, then correct: groups without a significant shift keep P_T (_post = _cal);
    the metadata and the QA priors table give the test, statistic, dof and p-value."""
    from tilecat.calibrate.groups import group_values
    from tilecat.qa.report import _priors
    from tilecat.qa.scores import catalog_groups

    out = _aggregate(survey, tmp_path / "gate")
    table = pq.read_table(out)
    meta = json.loads(table.schema.metadata[b"tilecat.priors"])
    assert meta["em"]["shift_test_alpha"] == 0.01
    groups = meta["groups"]
    # the shifted mix: mergers 10x rarer, edge-on 3x commoner, N(z) at higher z
    for q in ("merger", "edge_on", "z"):
        t = groups[q]["shift_test"]
        assert t["significant"] and t["used_em"] and t["p_value"] < 1e-6, q
        assert groups[q]["source"] == "em"
    # the card's labelled set is allowed for (two-sample test), not for the N(z)
    assert groups["merger"]["shift_test"]["test"] == "two-sample likelihood ratio"
    assert groups["merger"]["shift_test"]["n_labelled"] > 0
    assert groups["merger"]["shift_test"]["dof"] == 1
    assert groups["z"]["shift_test"]["test"] == "tilt score (degree 2)"
    kept = [q for q, g in groups.items() if not g["shift_test"]["used_em"]]
    assert kept  # questions whose mix is the training one (spin, bar, ...)
    cat = {g.name: g for g in catalog_groups(table.schema)}
    for q in kept:
        g = groups[q]
        assert g["source"].startswith("training: no significant shift"), q
        assert g["shift_test"]["p_value"] >= 0.01 and g["shift_test"]["significant"] is False
        assert g["used"] == g["train"]
        assert np.array_equal(group_values(table, cat[q], "post"),
                              group_values(table, cat[q], "cal")), q
    html = "".join(_priors(table).parts)
    assert "not significant: training prior kept" in html and "EM estimate used" in html
    # without the labelled set's size: the exact-calibration LR, larger
    out = _aggregate(survey, tmp_path / "exact", aggregate={"shift_test_labelled": False})
    exact = json.loads(pq.read_schema(out).metadata[b"tilecat.priors"])["groups"]
    t2, t1 = groups["merger"]["shift_test"], exact["merger"]["shift_test"]
    assert t1["test"] == "likelihood ratio" and "n_labelled" not in t1
    m = t2["n_labelled"]
    assert t2["statistic"] == pytest.approx(t1["statistic"] * m / (m + t1["n_eff"]), rel=1e-6)
    assert exact["z"]["shift_test"] == groups["z"]["shift_test"]
    # 0 turns the gate off: every estimate is used, the tests are still recorded
    out = _aggregate(survey, tmp_path / "nogate", aggregate={"shift_test_alpha": 0})
    groups = json.loads(pq.read_schema(out).metadata[b"tilecat.priors"])["groups"]
    assert all(g["source"] == "em" and g["shift_test"]["significant"] is None
               for g in groups.values())


def test_aggregate_with_given_priors_and_without_em(survey, tmp_path):
    out = _aggregate(survey, tmp_path / "given",
                     survey={"priors": {"merger": {"yes": 0.01, "no": 0.99}}},
                     aggregate={"estimate_priors": False})
    table = pq.read_table(out)
    meta = json.loads(table.schema.metadata[b"tilecat.priors"])
    assert meta["groups"]["merger"]["source"] == "given"
    assert meta["groups"]["merger"]["used"] == pytest.approx([0.01, 0.99])
    assert meta["groups"]["t"]["source"].startswith("training: EM disabled")
    assert meta["em"]["n_iter"] == 0
    assert np.array_equal(table["morph_t_smooth_post"].to_numpy(),
                          table["morph_t_smooth_cal"].to_numpy())
    assert (table["morph_merger_yes_post"].to_numpy()
            < table["morph_merger_yes_cal"].to_numpy() + 1e-7).all()


def test_aggregate_refuses_other_weights(survey, tmp_path):
    from tilecat.calibrate.run import write_card
    from tilecat.models import load_card

    other = tmp_path / "other"
    other.mkdir()
    card = load_card(survey.models["morphology"])
    card["sha256"] = "0" * 64
    write_card(card, other)
    with pytest.raises(ModelError, match="differ from those that made"):
        _aggregate(survey, tmp_path / "x", infer={"model_dirs": {
            "morphology": str(other), "photoz": str(survey.models["photoz"])}})


def test_stage_apply_names_missing_columns(survey):
    from tilecat.config import load_config
    from tilecat.priors.stage import plan_correction

    path = next((survey.root / "results" / "tiles").glob("*/catalog.parquet"))
    table = pq.read_table(path)
    corr = plan_correction(load_config(survey.config), table.schema)
    assert corr is not None and corr.raw_columns()[0] == "morph_t_smooth_raw"
    with pytest.raises(InputError, match="syn0000"):
        corr.apply(table.drop_columns(["morph_t_smooth_raw"]), "syn0000")


def test_em_needs_a_passed_self_test(survey, tmp_path):
    """Groups whose card has no (or a failed) EM self-test keep the calibrated outputs."""
    from tilecat.calibrate.run import write_card
    from tilecat.models import load_card

    models = {}
    for name in ("morphology", "photoz"):
        card = load_card(survey.models[name])
        d = tmp_path / name
        d.mkdir()
        if name == "morphology":
            card["calibration"]["metrics"]["merger"]["em_self_test"]["ok"] = False
            del card["calibration"]["metrics"]["edge_on"]["em_self_test"]
            metrics = card["calibration"]["metrics"]
            bad = {**metrics["spin"]["em_self_test"], "ok": False, "error": 0.3}
            metrics["spin"]["em_transfer_test"] = bad  # passed the self-test, fails transfer
            metrics["bar"]["em_transfer_test"] = dict(metrics["bar"]["em_self_test"])
        write_card(card, d)
        models[name] = str(d)
    # shift test off (0: recorded, never gating): this test is about the self-test gate
    out = _aggregate(survey, tmp_path / "st", infer={"model_dirs": models},
                     aggregate={"shift_test_alpha": 0})
    meta = json.loads(pq.read_schema(out).metadata[b"tilecat.priors"])["groups"]
    assert meta["merger"]["source"] == "training: EM self-test failed on the calibration set"
    assert meta["edge_on"]["source"].startswith("training: no EM self-test")
    assert meta["spin"]["source"].startswith("training: EM transfer test failed")
    assert meta["spin"]["em_transfer_test"]["ok"] is False
    assert meta["bar"]["source"] == "em" and meta["bar"]["em_transfer_test"]["ok"]
    assert meta["t"]["source"] == "em" and meta["z"]["source"] == "em"
    assert meta["merger"]["used"] == meta["merger"]["train"]
    # switched off, EM runs on every group
    out = _aggregate(survey, tmp_path / "all", infer={"model_dirs": models},
                     aggregate={"em_require_self_test": False, "shift_test_alpha": None})
    meta = json.loads(pq.read_schema(out).metadata[b"tilecat.priors"])["groups"]
    assert meta["merger"]["source"] == "em" and meta["edge_on"]["source"] == "em"
    assert meta["spin"]["source"] == "em"


def test_map_em_keeps_small_surveys_off_the_simplex_edge():
    p = np.tile([[0.2, 0.8]], (50, 1))  # 50 objects that all lean to class 1
    plain = em_priors(p, [0.5, 0.5], tol=1e-9, max_iter=5000).priors["p"]
    assert plain[0] < 1e-3  # ML runs to the edge
    mapped = em_priors(p, [0.5, 0.5], tol=1e-9, max_iter=5000, strength=100).priors["p"]
    assert 0.3 < mapped[0] < 0.5
    big = np.tile([[0.9, 0.1], [0.1, 0.9]], (20000, 1))[:30000]
    assert np.allclose(em_priors(big, [0.5, 0.5], strength=100).priors["p"],
                       em_priors(big, [0.5, 0.5]).priors["p"], atol=5e-3)


def test_prior_standard_errors():
    """Exact labels: the multinomial errors; an uninformative classifier: huge errors;
    and the EM estimate scatters over surveys as the standard error says."""
    from tilecat.priors.uncertainty import prior_standard_errors

    pi = np.array([0.2, 0.3, 0.5])
    n = 1000
    y = np.repeat([0, 1, 2], (pi * n).astype(int))
    onehot = np.eye(3)[y]
    se = prior_standard_errors(onehot, [1 / 3] * 3, pi)
    assert np.allclose(se, np.sqrt(pi * (1 - pi) / n))
    flat = np.full((n, 3), 1 / 3) + 1e-4 * np.random.default_rng(0).standard_normal((n, 3))
    assert prior_standard_errors(flat, [1 / 3] * 3, pi).min() > 1.0
    # weights: half the objects count -> errors x sqrt(2)
    se2 = prior_standard_errors(onehot, [1 / 3] * 3, pi, weights=np.full(n, 0.5))
    assert np.allclose(se2, se * np.sqrt(2))
    # Gaussian classes at a separation where EM is uncertain: SE vs scatter over surveys
    rng = np.random.default_rng(1)
    est, ses = [], []
    for _ in range(40):
        yy = (rng.random(2000) < 0.3).astype(int)
        x = rng.standard_normal(2000) + 1.0 * yy
        lr = np.exp(x - 0.5)  # likelihood ratio class 1 / class 0, equal training priors
        p = np.stack([1 / (1 + lr), lr / (1 + lr)], axis=1)
        e = em_priors(p, [0.5, 0.5], tol=1e-10, max_iter=5000).priors["p"]
        est.append(e[1])
        ses.append(prior_standard_errors(p, [0.5, 0.5], e)[1])
    assert np.std(est) == pytest.approx(np.mean(ses), rel=0.3)


def test_parents_first_orders_the_tree():
    """bar and bulge_size hang below merger, which the network outputs after them."""
    from tilecat.morphology.tree import QUESTIONS
    from tilecat.priors.tree import parents_first

    names = [q.name for q in QUESTIONS]
    order = parents_first(names, MORPHOLOGY_PATHS)
    assert sorted(order) == sorted(names)
    for q in names:
        for parent, _ in MORPHOLOGY_PATHS[q]:
            assert order.index(parent) < order.index(q), (parent, q)
    assert order.index("merger") < min(order.index("bar"), order.index("bulge_size"))
    rest = [n for n in names if n not in ("bar", "bulge_size")]
    assert [n for n in order if n in rest] == rest  # stable otherwise
    assert order.index("bar") < order.index("bulge_size")
    with pytest.raises(ValueError, match="cycle"):
        parents_first(["a", "b"], {"a": (("b", ()),), "b": (("a", ()),)})
