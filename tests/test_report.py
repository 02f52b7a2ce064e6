"""The QA report renders, is self-contained, and has every section (or says why not)."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tilecat.photoz.grid import ZGrid
from tilecat.priors import synthetic as syn

SECTIONS = ("summary", "priors", "calibration", "photoz", "defects", "galleries", "outliers")


def _tile_products(results, tile, ids):
    """A small tile store (image + defect_mask) and cutouts for ``ids``."""
    import xarray as xr

    from tilecat.store import write_arrays, write_group

    rng = np.random.default_rng(0)
    store = results / "tiles" / tile / "tile.zarr"
    write_group(store, {})
    image = rng.normal(0, 1, (1, 80, 90)).astype(np.float32)
    image[0, 40:44, 40:44] += 50
    mask = np.zeros((1, 80, 90), np.uint16)
    mask[0, 10, 5:30] = 1 << 3  # a trail
    mask[0, 60:62, 60:62] = 1 << 0  # a cosmic ray
    band = np.array(["r"], dtype=object)
    write_arrays(store, {
        "image": xr.DataArray(image, dims=("band", "y", "x"), coords={"band": band}),
        "defect_mask": xr.DataArray(mask, dims=("band", "y", "x"), coords={"band": band}),
    })
    stamps = rng.normal(0, 1, (len(ids), 1, 16, 16)).astype(np.float32)
    stamps[:, :, 6:10, 6:10] += 5
    xr.Dataset({"stamp": (("object", "band", "y", "x"), stamps),
                "object_id": (("object",), np.asarray(ids, np.int64))},
               coords={"band": band}).to_zarr(results / "tiles" / tile / "cutouts.zarr",
                                              mode="w", zarr_format=3, consolidated=False)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A synthetic survey with both models, truth, a tile store, cutouts, a masker card."""
    from tilecat.aggregate import run_aggregate
    from tilecat.calibrate import run_calibrate
    from tilecat.calibrate.run import write_card
    from tilecat.config import load_config
    from tilecat.parquetmeta import write_table
    from tilecat.priors.simsurvey import write_synthetic_survey

    root = tmp_path_factory.mktemp("report")
    s = write_synthetic_survey(root / "s", mix=syn.shifted_mix(),
                               nz=syn.nz_shape(ZGrid(), 0.5), n_tiles=2, per_tile=600,
                               n_labelled=3000)
    for m in ("morphology", "photoz"):
        # morphology with an EM transfer test (here on the calibration set itself)
        run_calibrate(s.models[m], s.labelled, log=lambda msg: None,
                      check=s.labelled if m == "morphology" else None)
    results = s.root / "results"
    for k, path in enumerate(sorted((results / "tiles").glob("*/catalog.parquet"))):
        t = pq.read_table(path)
        score = np.random.default_rng(k).chisquare(40, t.num_rows) ** 0.5
        write_table(t.append_column("latent_outlier_score", pa.array(score.astype(np.float32))),
                    path)
        if k == 0:
            _tile_products(results, path.parent.name, t["object_id"].to_numpy())
    masker = root / "masker"
    masker.mkdir()
    write_card({"name": "masker", "thresholds": {"cosmic_ray": 0.5},
                "metrics": {"heldout_split_B": {
                    "cosmic_ray": {"n_pos": 100, "auc": 0.99, "ap": 0.9,
                                   "tpr_at_fpr_1e-03": 0.8, "tpr_at_fpr_1e-04": 0.6},
                    "trail": {"n_pos": 50, "auc": 0.97, "ap": 0.7,
                              "roc": {"fpr": [0, 1e-4, 1e-2, 1], "tpr": [0, 0.5, 0.9, 1]}}}}},
               masker)
    cfg = yaml.safe_load(s.config.read_text())
    cfg["mask"] = {"model": str(masker)}
    cfg["report"] = {"truth": str(s.truth), "gallery": 4, "outliers": 5, "tiles": 2}
    s.config.write_text(yaml.safe_dump(cfg))
    run_aggregate(load_config(s.config))
    return s


def _images(html: str) -> list[str]:
    return re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', html)


def test_report_has_every_section(full):
    from tilecat.cli import main

    assert main(["report", "--config", str(full.config)]) == 0
    out = full.root / "results" / "report.html"
    html = out.read_text()
    for sec in SECTIONS:
        assert f'<section id="{sec}">' in html, sec
    assert "http://" not in html and "https://" not in html  # self-contained
    alts = _images(html)
    for want in ("EM convergence", "reliability before/after calibration", "survey reliability",
                 "PIT calibration set", "PIT survey", "z_phot vs z_true", "N(z)", "defect ROC",
                 "mask overlay syn0000", "gallery t smooth", "latent outliers"):
        assert want in alts, want
    assert "mask overlay syn0001" not in alts  # no tile store there
    assert "mask overlays: not available" not in html
    # priors table and EM log come from the catalog metadata
    assert "merger" in html and "em" in html and "converged" in html
    assert "self-test passed" in html and "transfer passed" in html
    # deterministic
    first = out.read_bytes()
    main(["report", "--config", str(full.config)])
    assert out.read_bytes() == first


def test_report_without_models_says_not_available(tmp_path):
    from tilecat.aggregate import run_aggregate
    from tilecat.config import load_config
    from tilecat.priors.simsurvey import write_survey
    from tilecat.qa import run_report

    table = pa.table({"flux_r": pa.array(np.ones(30, np.float32))})
    cfg = write_survey(tmp_path, table, {}, [], per_tile=10)
    config = load_config(cfg)
    run_aggregate(config)
    html = run_report(config).read_text()
    for sec in SECTIONS:
        assert f'<section id="{sec}">' in html, sec
    for what in ("priors: not available", "photo-z: not available", "galleries: not available",
                 "latent outliers: not available", "defect ROC curves: not available",
                 "mask overlays: not available"):
        assert what in html, what
    assert _images(html) == []


def test_report_needs_a_catalog(tmp_path):
    from tilecat.config import load_config
    from tilecat.errors import InputError
    from tilecat.priors.simsurvey import write_survey
    from tilecat.qa import run_report

    cfg = write_survey(tmp_path, pa.table({"a": [1.0]}), {}, [], per_tile=10)
    with pytest.raises(InputError, match="no survey catalog"):
        run_report(load_config(cfg))


def test_truth_matching_by_position(tmp_path):
    from tilecat.qa.data import match_truth

    d = tmp_path / "data" / "t0"
    d.mkdir(parents=True)
    pq.write_table(pa.table({"x": [10.0, 50.0], "y": [10.0, 50.0], "redshift": [0.3, 0.7],
                             "is_star": [False, True], "t_class": ["smooth", "artifact"]}),
                   d / "truth.parquet")
    catalog = pa.table({"object_id": [1, 2, 3], "tile": ["t0"] * 3,
                        "x": [10.5, 49.0, 80.0], "y": [9.8, 50.2, 80.0]})
    config = {"survey": {"bands": ["r"], "files": {"image": {
        "pattern": str(tmp_path / "data" / "{tile}" / "{tile}-{band}.fits")}}},
        "report": {"match_radius": 2.0}}
    rows, cols = match_truth(config, catalog)
    assert rows.tolist() == [0, 1]
    assert cols["z_true"][0] == pytest.approx(0.3) and np.isnan(cols["z_true"][1])  # star
    assert json.dumps(list(cols["t_class"])) == '["smooth", "artifact"]'


def test_report_subsamples_large_catalogs(full, tmp_path):
    from tilecat.config import load_config
    from tilecat.qa.report import _read_catalog

    config = load_config(full.config)
    table, total = _read_catalog(full.root / "results", 300)
    assert total == 1200 and 150 < table.num_rows < 450
    assert b"tilecat.priors" in table.schema.metadata
    again, _ = _read_catalog(full.root / "results", 300)
    assert again.equals(table)  # the same sample every time
    assert config["report"]["max_rows"] == 200000
