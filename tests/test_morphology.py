"""Tests of the morphology tree, label mapping and spin-symmetric network."""

from __future__ import annotations

import numpy as np
import pytest

from tilecat.morphology.labels import IGNORE, decode, encode, priors
from tilecat.morphology.tree import (
    N_ANSWERS,
    QUESTIONS,
    answer_slices,
    column_names,
    mirror_permutation,
)


def _consistent_truth(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random truth labels that respect the tree (non-applicable -> NOT_APPLICABLE)."""
    rng = np.random.default_rng(seed)
    t = rng.choice(["smooth", "featured", "artifact"], n)
    featured = t == "featured"
    edge = featured & (rng.random(n) < 0.3)
    face = featured & ~edge
    arms = face & (rng.random(n) < 0.6)
    merger = (t != "artifact") & (rng.random(n) < 0.2)
    return {
        "t_class": t.astype(object),
        "edge_on": edge,
        "spiral_arms": arms,
        "spin": np.where(arms, rng.choice(["S", "Z"], n), "none").astype(object),
        "bar": np.where(face & ~merger, rng.choice(["strong", "weak", "none"], n),
                        "none").astype(object),
        "bulge_size": np.where(face & ~merger, rng.choice(["none", "small", "moderate",
                                                          "large"], n), "none").astype(object),
        "merger": merger,
        "roundness": np.where(t == "smooth", rng.choice(["round", "between", "cigar"], n),
                              "none").astype(object),
    }


def test_tree_columns():
    cols = column_names()
    assert len(cols) == N_ANSWERS == len(set(cols))
    assert "morph_t_featured_raw" in cols and "morph_spin_S_raw" in cols
    assert "morph_bulge_size_moderate_raw" in cols and "morph_roundness_cigar_raw" in cols
    s = answer_slices()
    assert [cols[i] for i in range(s["spin"].start, s["spin"].stop)] == [
        "morph_spin_S_raw", "morph_spin_Z_raw"]


def test_mirror_permutation_swaps_only_spin():
    perm = mirror_permutation()
    cols = column_names()
    moved = [cols[i] for i in range(N_ANSWERS) if perm[i] != i]
    assert moved == ["morph_spin_S_raw", "morph_spin_Z_raw"]
    assert np.array_equal(perm[perm], np.arange(N_ANSWERS))


def test_label_round_trip():
    truth = _consistent_truth(500)
    targets = encode(truth)
    assert targets.shape == (500, len(QUESTIONS))
    back = decode(targets)
    for key, values in truth.items():
        assert np.array_equal(np.asarray(back[key]), np.asarray(values)), key
    # the tree masks: spin only for face-on spirals, roundness only for smooth
    j_spin = [q.name for q in QUESTIONS].index("spin")
    j_round = [q.name for q in QUESTIONS].index("roundness")
    assert np.all((targets[:, j_spin] != IGNORE) == truth["spiral_arms"])
    assert np.all((targets[:, j_round] != IGNORE) == (truth["t_class"] == "smooth"))


def test_bar_and_bulge_of_mergers_are_training_targets_only():
    """The tree asks single face-on galaxies for their bar and bulge; the network also
    learns those of face-on mergers (the shipped weights' targets)."""
    truth = _consistent_truth(400, seed=3)
    face_merger = (truth["t_class"] == "featured") & ~truth["edge_on"] & truth["merger"]
    assert face_merger.sum() > 10
    truth["bulge_size"] = np.where(face_merger, "large", truth["bulge_size"]).astype(object)
    truth["bar"] = np.where(face_merger, "none", truth["bar"]).astype(object)
    names = [q.name for q in QUESTIONS]
    tree, train = encode(truth), encode(truth, training=True)
    same = np.ones(len(QUESTIONS), bool)
    for q, answer in (("bulge_size", "large"), ("bar", "none")):
        j = names.index(q)
        assert np.all(tree[face_merger, j] == IGNORE)
        assert np.all(train[face_merger, j] == QUESTIONS[j].answers.index(answer))
        same[j] = False
    assert np.array_equal(tree[:, same], train[:, same])
    assert np.array_equal(tree[~face_merger], train[~face_merger])


def test_label_inconsistent_truth_is_masked():
    truth = _consistent_truth(4)
    truth["t_class"] = np.array(["smooth"] * 4, dtype=object)
    truth["spin"] = np.array(["S", "Z", "S", "none"], dtype=object)  # spin on smooth galaxies
    targets = encode(truth)
    j_spin = [q.name for q in QUESTIONS].index("spin")
    assert np.all(targets[:, j_spin] == IGNORE)


def test_priors_sum_to_one():
    p = priors(encode(_consistent_truth(300)))
    for q in QUESTIONS:
        assert abs(sum(p[q.name].values()) - 1) < 1e-9


torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def sym_net():
    from tilecat.morphology.model import build
    from tilecat.morphology.net import fuse_all

    torch.manual_seed(1)
    card = {"input": {"bands": ["g", "r", "i", "z"], "stamp_size": 32}}
    net = build(card)
    # give the batch norms non-trivial statistics, then fold them
    net.train()
    with torch.no_grad():
        net.net(torch.randn(16, 4, 32, 32))
    return fuse_all(net).to(memory_format=torch.channels_last)


def test_spin_swap_under_mirror(sym_net):
    x = torch.randn(6, 4, 32, 32)
    x[:, :, :, :16] += 2.0  # asymmetric
    with torch.inference_mode():
        p = sym_net(x).numpy()
        pm = sym_net(x.flip(-1)).numpy()
    s = answer_slices()["spin"]
    assert np.array_equal(pm[:, s.start], p[:, s.start + 1])
    assert np.array_equal(pm[:, s.start + 1], p[:, s.start])
    assert np.array_equal(pm[:, mirror_permutation()], p)
    # not trivially symmetric: spin probabilities differ from 1/2
    assert np.abs(p[:, s.start] - 0.5).max() > 1e-4
    for sl in answer_slices().values():
        np.testing.assert_allclose(p[:, sl].sum(1), 1, rtol=1e-5)


def test_batch_invariance(sym_net):
    x = torch.randn(9, 4, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        whole = sym_net(x)
        pairs = torch.cat([sym_net(x[i:i + 2]) for i in range(0, 8, 2)] + [sym_net(x[7:9])[1:]])
    assert torch.equal(whole, pairs)


def test_fuse_preserves_outputs():
    from tilecat.morphology.model import build
    from tilecat.morphology.net import fuse_all

    torch.manual_seed(2)
    net = build({"input": {"bands": ["g", "r"], "stamp_size": 32}})
    net.train()
    with torch.no_grad():
        net.net(torch.randn(8, 2, 32, 32) * 3)
    net.eval()
    x = torch.randn(5, 2, 32, 32)
    with torch.inference_mode():
        before = net(x)
        after = fuse_all(net)(x)
    np.testing.assert_allclose(before.numpy(), after.numpy(), rtol=1e-4, atol=1e-5)


def _fake_stamp_set(path, n: int = 48, size: int = 32, seed: int = 0):
    """A tiny galaxy stamp set in the SIM_CONTRACT layout (Gaussian blobs, random labels)."""
    truth = _consistent_truth(n, seed)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r50 = rng.uniform(0.5, 2.0, n)  # arcsec
    img = np.exp(-(xx**2 + yy**2)[None] / (2 * (r50[:, None, None] / 0.262 / 1.18) ** 2))
    stamps = np.arcsinh(20 * img[:, None] + rng.normal(size=(n, 4, size, size))).astype(np.float32)
    xr = pytest.importorskip("xarray")
    data = {"stamps": (("object", "band", "y", "x"), stamps),
            "sigma": (("object", "band"), np.ones((n, 4), np.float32)),
            "r50": (("object",), r50), "sersic_n": (("object",), rng.uniform(0.5, 4, n)),
            "e1": (("object",), rng.normal(0, 0.1, n)), "e2": (("object",), rng.normal(0, 0.1, n)),
            "snr": (("object",), rng.uniform(5, 100, n)),
            "psf_fwhm": (("object", "band"), np.ones((n, 4)))}
    for k, v in truth.items():
        data[k] = (("object",), v)
    ds = xr.Dataset(data, coords={"band": np.array(["g", "r", "i", "z"], dtype=object)},
                    attrs={"bands": ["g", "r", "i", "z"], "pixel_scale": 0.262, "seed": seed,
                           "heldout": False, "recipe": "test"})
    ds.to_zarr(path, zarr_format=3, consolidated=False, mode="w")
    return path


def test_train_then_infer_smoke(tmp_path):
    """Train both nets for one epoch on a tiny set; the engine runs both heads from the cards."""
    import pyarrow.parquet as pq

    from tilecat.infer import run_infer
    from tilecat.morphology.train import train_morphology
    from tilecat.structure.train import train_structure
    from tilecat.survey import tile_paths

    st = _fake_stamp_set(tmp_path / "stamps.zarr")
    arch = {"widths": [8, 8, 16], "strides": [2, 2, 2], "kernels": [3, 3, 3], "hidden": 16}
    card = train_morphology(st, tmp_path / "morph", epochs=1, batch_size=16, arch=arch,
                            log=lambda s: None)
    assert card["priors_train"]["t"] and len(card["sha256"]) == 64
    card_s = train_structure(st, tmp_path / "struct", epochs=1, batch_size=16, arch=arch,
                             log=lambda s: None)
    assert "r50_median_rel_err" in card_s["evaluation"]["metrics"]

    xr = pytest.importorskip("xarray")
    cfg = {"survey": {"name": "t", "bands": ["g", "r", "i", "z"], "pixel_scale": 0.262},
           "results": str(tmp_path / "res"),
           "infer": {"models": ["morphology", "structure"], "batch_size": 8, "device": "cpu",
                     "model_dirs": {"morphology": str(tmp_path / "morph"),
                                    "structure": str(tmp_path / "struct")}}}
    src = xr.open_zarr(st, consolidated=False)
    cut = xr.Dataset({"stamp": src.stamps[:10].astype(np.float32),
                      "object_id": (("object",), np.arange(10, 0, -1, dtype=np.int64))})
    cut.to_zarr(tile_paths(cfg, "t0")["cutouts"], zarr_format=3, consolidated=False, mode="w")
    from tilecat.errors import InputError

    with pytest.raises(InputError, match="PSF FWHM"):  # structure needs the tile's PSF
        run_infer(cfg, "t0")
    import json as _json

    store = tile_paths(cfg, "t0")["store"]
    store.mkdir(parents=True)
    (store / "zarr.json").write_text(_json.dumps({
        "zarr_format": 3, "node_type": "group",
        "attributes": {"psf_fwhm": {"g": 1.2, "r": 1.1, "i": 1.0, "z": 1.0}}}))
    run_infer(cfg, "t0")
    table = pq.read_table(tile_paths(cfg, "t0")["infer"])
    assert table["object_id"].to_pylist() == list(range(1, 11))
    assert "morph_spin_Z_raw" in table.column_names and "struct_r50_err" in table.column_names
    assert np.all(table["struct_r50_err"].to_numpy() > 0)


def test_degrade_keeps_unit_noise_and_blurs():
    from tilecat.morphology.fit import degrade

    gen = torch.Generator().manual_seed(0)
    noise = torch.asinh(torch.randn(64, 4, 32, 32, generator=gen))
    out = degrade(noise, gen, prob=1.0, max_blur=2.0, min_scale=0.45)
    assert abs(float(torch.sinh(out).std()) - 1.0) < 0.05
    point = torch.zeros(8, 4, 32, 32)
    point[:, :, 16, 16] = 1e4
    x = torch.asinh(point)
    blurred = torch.sinh(degrade(x, gen, prob=1.0, max_blur=2.0, min_scale=0.45))
    assert float(blurred[:, :, 16, 16].max()) < 1e4  # peak spread and scaled down
    assert torch.equal(degrade(x, gen, prob=0.0, max_blur=2.0, min_scale=0.45), x)


def test_shipped_morphology_spin_swap_through_engine(tmp_path):
    """The shipped weights, run by the engine: a mirrored stamp gets S and Z exactly swapped."""
    from importlib import resources
    from pathlib import Path

    import pyarrow.parquet as pq

    xr = pytest.importorskip("xarray")
    from tilecat.infer import run_infer
    from tilecat.survey import tile_paths

    shipped = Path(str(resources.files("tilecat").joinpath("data", "models", "morphology")))
    if not (shipped / "card.json").is_file():
        pytest.skip("no shipped morphology model")
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64] - 31.5
    blob = 30 * np.exp(-((xx - 3) ** 2 / 40 + (yy + 2) ** 2 / 12))
    stamps = np.arcsinh(blob[None, None] + rng.normal(size=(4, 4, 64, 64))).astype(np.float32)
    both = np.concatenate([stamps, stamps[..., ::-1]])
    cfg = {"survey": {"name": "t", "bands": ["g", "r", "i", "z"], "pixel_scale": 0.262},
           "results": str(tmp_path), "infer": {"models": ["morphology"], "batch_size": 3,
                                              "device": "cpu"}}
    ds = xr.Dataset({"stamp": (("object", "band", "y", "x"), both),
                     "object_id": (("object",), np.arange(1, 9, dtype=np.int64)),
                     # the seeing of each object (arcsec), for models with PSF input
                     "psf_fwhm": (("object", "band"), np.full((8, 4), 1.2, np.float32))},
                    coords={"band": np.array(["g", "r", "i", "z"], dtype=object)})
    ds.to_zarr(tile_paths(cfg, "t0")["cutouts"], zarr_format=3, consolidated=False)
    run_infer(cfg, "t0")
    t = pq.read_table(tile_paths(cfg, "t0")["infer"]).to_pydict()
    s, z = np.array(t["morph_spin_S_raw"]), np.array(t["morph_spin_Z_raw"])
    assert np.array_equal(s[:4], z[4:]) and np.array_equal(z[:4], s[4:])
    assert np.array_equal(np.array(t["morph_t_featured_raw"])[:4],
                          np.array(t["morph_t_featured_raw"])[4:])


def test_psf_input_network_is_spin_equivariant_and_uses_the_psf():
    from tilecat.morphology.model import build

    torch.manual_seed(2)
    card = {"input": {"bands": ["g", "r"], "stamp_size": 32, "pixel_scale": 0.262},
            "arch": {"psf_input": True}}
    net = build(card).eval()
    x = torch.randn(4, 2, 32, 32)
    psf = torch.tensor([[1.0, 0.9]] * 4)
    with torch.inference_mode():
        p = net(x, psf).numpy()
        pm = net(x.flip(-1), psf).numpy()
        p2 = net(x, psf * 2).numpy()
    np.testing.assert_allclose(pm[:, mirror_permutation()], p, atol=1e-6)
    assert np.abs(p2 - p).max() > 1e-5  # the seeing enters the prediction
    with pytest.raises(ValueError, match="PSF"):
        net(x)


def test_spin_accuracy_on_visible_arms_only():
    from tilecat.morphology.metrics import arms_resolved, morphology_metrics

    resolved = arms_resolved(np.array([3.0, 3.0, 0.5, 0.5, np.nan]),
                             np.array([1.0, 1.0, 1.0, 1.0, 1.0]))
    assert resolved.tolist() == [True, True, False, False, False]
    j = [q.name for q in QUESTIONS].index("spin")
    targets = np.full((5, len(QUESTIONS)), IGNORE)
    targets[:4, j] = [0, 1, 0, 1]  # S, Z, S, Z
    probs = np.full((5, N_ANSWERS), 0.5)
    s = answer_slices()["spin"]
    probs[:, s.start] = [0.9, 0.1, 0.1, 0.9, 0.5]  # right, right, wrong, wrong
    probs[:, s.start + 1] = 1 - probs[:, s.start]
    m = morphology_metrics(probs, targets, snr=np.full(5, 50.0), resolved=resolved)
    assert m["spin_accuracy"] == 1.0 and m["n_spin_visible"] == 2
    assert m["spin_accuracy_all"] == 0.5


def test_bar_auc_sees_what_accuracy_hides():
    """A bar question answered at the base rate ('none' always wins) has a fine
    accuracy when most disks are unbarred, but AUC 0.5; a ranking that puts the
    barred ones first has AUC 1 whatever the argmax says."""
    from tilecat.morphology.metrics import answer_auc, morphology_metrics

    j = [q.name for q in QUESTIONS].index("bar")
    s = answer_slices()["bar"]
    targets = np.full((8, len(QUESTIONS)), IGNORE)
    targets[:, j] = [0, 1, 2, 2, 2, 2, 2, 2]  # strong, weak, six none
    targets[:, [q.name for q in QUESTIONS].index("spiral_arms")] = [0] * 6 + [1] * 2
    probs = np.full((8, N_ANSWERS), 0.5)
    probs[:, s] = [0.1, 0.1, 0.8]              # base rate for all
    m = morphology_metrics(probs, targets)
    assert m["accuracy"]["bar"] == 0.75 and m["bar_auc"] == 0.5
    probs[:2, s] = [0.15, 0.1, 0.75]           # barred: slightly less 'none'
    m = morphology_metrics(probs, targets)
    assert m["bar_auc"] == 1.0 and m["accuracy"]["bar"] == 0.75
    assert m["bar_auc_all"] == 1.0  # 6 spirals (2 barred) + 2 armless unbarred disks
    auc = answer_auc(probs, targets)["bar"]
    assert auc["none"] == 1.0 and auc["strong"] == pytest.approx(6.5 / 7)  # ties with weak
    assert answer_auc(probs, targets)["spin"] == {"S": None, "Z": None}  # not applicable
    probs[6:, s] = [0.5, 0.3, 0.2]             # armless disks look barred
    m = morphology_metrics(probs, targets)
    assert m["bar_auc"] == 1.0 and m["bar_auc_all"] < 1.0
