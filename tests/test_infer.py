"""Tests of the inference engine (tilecat.infer) with a small registered toy head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
xr = pytest.importorskip("xarray")

from tilecat.errors import ConfigError, InputError, ModelError  # noqa: E402
from tilecat.infer import Column, Head, LoadedHead, register_head, run_infer  # noqa: E402
from tilecat.infer.heads import model_location  # noqa: E402
from tilecat.infer.layers import BatchInvariantLinear  # noqa: E402
from tilecat.models import load_model, save_model  # noqa: E402
from tilecat.survey import tile_paths  # noqa: E402

BANDS = ["g", "r", "i", "z"]
SIZE = 16


class ToyNet(torch.nn.Module):
    """conv -> ReLU -> global mean -> linear: 3 logits."""

    def __init__(self, card: dict) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(len(BANDS), 8, 3, padding=1)
        self.fc = BatchInvariantLinear(8, 3)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class ToyHead(Head):
    name = "toy"
    answers = ("a", "b", "c")

    def load(self, config, device) -> LoadedHead:
        module, card = load_model(model_location(config, self.name), ToyNet, device)
        cols = tuple(Column(f"toy_{a}_raw", "float32", "", f"P({a})") for a in self.answers)
        return LoadedHead(module, card, cols)

    def postprocess(self, raw, loaded):
        p = torch.softmax(torch.from_numpy(raw), dim=1).numpy()
        return {f"toy_{a}_raw": p[:, k] for k, a in enumerate(self.answers)}


register_head(ToyHead(), replace=True)


def _config(tmp: Path, models: list[str], batch_size: int = 256, model_dir: Path | None = None):
    cfg = {
        "survey": {"name": "t", "bands": BANDS},
        "tiles": str(tmp / "tiles.tsv"),
        "results": str(tmp / "results"),
        "infer": {"models": models, "batch_size": batch_size, "device": "cpu", "gpu": False,
                  "model_dirs": {"toy": str(model_dir)} if model_dir else {}},
    }
    return cfg


def _write_cutouts(cfg: dict, tile: str, n: int, seed: int = 0, chunk: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stamps = rng.normal(size=(n, len(BANDS), SIZE, SIZE)).astype(np.float32)
    ids = (3 * 1_000_000 + rng.permutation(np.arange(1, n + 1))).astype(np.int64)
    ds = xr.Dataset(
        {"stamp": (("object", "band", "y", "x"), stamps), "object_id": (("object",), ids)},
        coords={"band": np.array(BANDS, dtype=object)},
    )
    path = tile_paths(cfg, tile)["cutouts"]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_zarr(path, zarr_format=3, consolidated=False, mode="w",
               encoding={"stamp": {"chunks": (chunk, len(BANDS), SIZE, SIZE)}})
    return ids


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("toy")
    save_model(ToyNet({}), {"name": "toy", "version": "0", "input": {"bands": BANDS,
                                                                    "stamp_size": SIZE}}, d)
    return d


def test_empty_model_list_writes_sorted_object_ids(tmp_path):
    cfg = _config(tmp_path, [])
    ids = _write_cutouts(cfg, "t0", 23)
    run_infer(cfg, "t0")
    table = pq.read_table(tile_paths(cfg, "t0")["infer"])
    assert table.column_names == ["object_id"]
    assert table["object_id"].to_numpy().tolist() == sorted(ids.tolist())
    units = json.loads(table.schema.metadata[b"tilecat.units"])
    assert "object_id" in units


def test_zero_objects(tmp_path, toy_model):
    cfg = _config(tmp_path, ["toy"], model_dir=toy_model)
    _write_cutouts(cfg, "t0", 0)
    run_infer(cfg, "t0")
    table = pq.read_table(tile_paths(cfg, "t0")["infer"])
    assert table.num_rows == 0
    assert table.column_names == ["object_id", "toy_a_raw", "toy_b_raw", "toy_c_raw"]


def test_batch_size_invariance_order_and_ids(tmp_path, toy_model):
    tables = []
    for bs in (1, 64):
        cfg = _config(tmp_path / f"bs{bs}", ["toy"], batch_size=bs, model_dir=toy_model)
        ids = _write_cutouts(cfg, "t0", 50)
        run_infer(cfg, "t0")
        tables.append(pq.read_table(tile_paths(cfg, "t0")["infer"]))
    t1, t64 = tables
    assert t1.equals(t64)
    # rows sorted by object_id and each row's values belong to that object
    oid = t1["object_id"].to_numpy()
    assert np.all(np.diff(oid) > 0) and sorted(ids.tolist()) == oid.tolist()
    # recompute object by object, directly with the model, in store order
    module, _ = load_model(toy_model, ToyNet)
    ds = xr.open_zarr(tile_paths(cfg, "t0")["cutouts"], consolidated=False)
    with torch.inference_mode():
        p = torch.softmax(module(torch.from_numpy(ds.stamp.values)), 1).numpy()
    by_id = dict(zip(ds.object_id.values.tolist(), p[:, 1].tolist()))
    got = t1["toy_b_raw"].to_numpy()
    want = np.array([by_id[i] for i in oid], np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert abs(got.sum() + t1["toy_a_raw"].to_numpy().sum() + t1["toy_c_raw"].to_numpy().sum()
               - len(oid)) < 1e-3


def test_deterministic_bytes(tmp_path, toy_model):
    cfg = _config(tmp_path, ["toy"], batch_size=16, model_dir=toy_model)
    _write_cutouts(cfg, "t0", 30)
    out = tile_paths(cfg, "t0")["infer"]
    run_infer(cfg, "t0")
    first = out.read_bytes()
    run_infer(cfg, "t0")
    assert out.read_bytes() == first
    meta = json.loads(pq.read_schema(out).metadata[b"tilecat.models"])
    assert meta[0]["name"] == "toy" and len(meta[0]["sha256"]) == 64


def test_missing_card_refused(tmp_path):
    cfg = _config(tmp_path, ["toy"], model_dir=tmp_path / "nowhere")
    _write_cutouts(cfg, "t0", 5)
    with pytest.raises(ModelError, match="card.json"):
        run_infer(cfg, "t0")
    assert not tile_paths(cfg, "t0")["infer"].exists()


def test_tampered_weights_refused(tmp_path, toy_model):
    import shutil

    d = tmp_path / "toy_bad"
    shutil.copytree(toy_model, d)
    w = d / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    cfg = _config(tmp_path, ["toy"], model_dir=d)
    _write_cutouts(cfg, "t0", 5)
    with pytest.raises(ModelError, match="sha256"):
        run_infer(cfg, "t0")


def test_card_band_mismatch_refused(tmp_path):
    torch.manual_seed(0)
    d = tmp_path / "toy_ugri"
    save_model(ToyNet({}), {"name": "toy", "input": {"bands": ["u", "g", "r", "i"],
                                                     "stamp_size": SIZE}}, d)
    cfg = _config(tmp_path, ["toy"], model_dir=d)
    _write_cutouts(cfg, "t0", 5)
    with pytest.raises(ModelError, match="bands"):
        run_infer(cfg, "t0")


def test_unknown_model_and_missing_cutouts(tmp_path):
    cfg = _config(tmp_path, ["no_such_head"])
    _write_cutouts(cfg, "t0", 3)
    with pytest.raises(ConfigError, match="no_such_head"):
        run_infer(cfg, "t0")
    with pytest.raises(InputError, match="cutouts"):
        run_infer(_config(tmp_path, []), "t1")


def test_explain_png(tmp_path):
    """Grad-CAM PNG for a morphology answer of one object (untrained model)."""
    from tilecat.explain import explain
    from tilecat.morphology.model import build

    d = tmp_path / "morph"
    card = {"name": "morphology", "input": {"bands": BANDS, "stamp_size": SIZE}}
    torch.manual_seed(0)
    save_model(build(card), card, d)
    cfg = _config(tmp_path, ["morphology"])
    cfg["infer"]["model_dirs"] = {"morphology": str(d)}
    ids = _write_cutouts(cfg, "t0", 5)
    out = tmp_path / "x.png"
    info = explain(cfg, "t0", int(ids[2]), "morphology", "spin_S", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0 <= info["value"] <= 1
    with pytest.raises(InputError, match="not in the cutouts"):
        explain(cfg, "t0", 999, "morphology", "spin_S", out)
    with pytest.raises(ModelError, match="no single output"):
        explain(cfg, "t0", int(ids[2]), "morphology", "nonsense", out)


class BetaEcho(torch.nn.Module):
    """Returns its ``psf_beta`` input (N, n_band), touching the stamps so they flow."""

    def forward(self, x: "torch.Tensor", psf_beta: "torch.Tensor") -> "torch.Tensor":
        return psf_beta + 0.0 * x.mean(dim=(2, 3))


class BetaHead(Head):
    name = "beta_echo"

    def load(self, config, device) -> LoadedHead:
        cols = tuple(Column(f"beta_{b}", "float32", "", f"PSF beta, {b}") for b in BANDS)
        card = {"name": self.name, "input": {"bands": BANDS, "stamp_size": SIZE}}
        return LoadedHead(BetaEcho(), card, cols, inputs=("psf_beta",))

    def postprocess(self, raw, loaded):
        return {f"beta_{b}": raw[:, k] for k, b in enumerate(BANDS)}


register_head(BetaHead(), replace=True)


def test_psf_beta_input_from_cutouts_attrs(tmp_path):
    """A head asking for ``psf_beta`` gets the detect stage's per-band Moffat beta
    (cutouts.zarr attribute ``psf``) for every object; a clear error without it."""
    cfg = _config(tmp_path, ["beta_echo"], batch_size=8)
    _write_cutouts(cfg, "t0", 19)
    path = tile_paths(cfg, "t0")["cutouts"]
    meta_file = path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    betas = {"g": 2.25, "r": 3.5, "i": 4.75, "z": 3.0}
    meta.setdefault("attributes", {})["psf"] = {
        b: {"fwhm": 1.2, "beta": v, "n_stars": 9, "source": "stars" if b != "z" else "default",
            "fwhm_fit": 1.21, "beta_fit": v} for b, v in betas.items()}
    meta_file.write_text(json.dumps(meta))
    run_infer(cfg, "t0")
    table = pq.read_table(tile_paths(cfg, "t0")["infer"])
    assert table.num_rows == 19
    for b, v in betas.items():
        np.testing.assert_array_equal(table[f"beta_{b}"].to_numpy(), np.float32(v))
    # a band's beta missing, then the whole attribute
    del meta["attributes"]["psf"]["i"]["beta"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"t0.*cutouts\.zarr.*\['i'\]"):
        run_infer(cfg, "t0")
    del meta["attributes"]["psf"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"t0.*cutouts\.zarr.*no 'psf' attribute.*detect"):
        run_infer(cfg, "t0")
