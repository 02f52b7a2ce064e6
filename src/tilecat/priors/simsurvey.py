"""A synthetic survey of tile catalogs with exact classifiers (benchmarks and tests).

:func:`write_synthetic_survey` writes, under one directory, everything the aggregate
step and ``tilecat calibrate`` need, without images or networks: model cards of a
synthetic morphology classifier and photo-z estimator (:mod:`tilecat.priors.synthetic`:
exact posteriors under known training priors, distorted by a temperature), a labelled
calibration set drawn with the training mix, tile catalogs of a survey drawn with any
class mix and N(z), the truth of every survey object, and a tilecat config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import synthetic as syn

__all__ = ["SyntheticSurvey", "write_synthetic_survey", "write_survey", "synthetic_cards",
           "outputs_table",
           "MORPH_SHA", "PHOTOZ_SHA"]

MORPH_SHA = "synthetic-morphology-0"
PHOTOZ_SHA = "synthetic-photoz-0"


@dataclass
class SyntheticSurvey:
    """Paths of a synthetic survey.

    Attributes
    ----------
    config : Path
        tilecat config YAML (results under ``root/results``).
    labelled : Path
        Calibration set (training mix): raw outputs + truth, Parquet.
    truth : Path
        Truth of every survey object (``object_id``, label columns, ``z_true``).
    models : dict
        Model name -> model directory.
    """

    root: Path
    config: Path
    labelled: Path
    truth: Path
    models: dict[str, Path]


def synthetic_cards(nz_train: np.ndarray, grid: Any,
                    train_mix: Mapping[str, Mapping[str, float]] = syn.TRAIN_MIX
                    ) -> dict[str, dict[str, Any]]:
    """Model cards of the synthetic morphology and photo-z models (no weights)."""
    from ..morphology.tree import QUESTIONS

    return {
        "morphology": {
            "name": "morphology", "version": "synthetic",
            "task": "synthetic exact classifier (tilecat.priors.synthetic), distorted",
            "questions": [[q.name, list(q.answers)] for q in QUESTIONS],
            "priors_train": {q: dict(v) for q, v in train_mix.items()},
            "sha256": MORPH_SHA,
        },
        "photoz": {
            "name": "photoz", "version": "synthetic",
            "task": "synthetic exact photo-z PDFs (tilecat.priors.synthetic), distorted",
            "z_grid": grid.to_meta(),
            "prior": {"kind": "training N(z)", "p": [float(v) for v in nz_train]},
            "sha256": PHOTOZ_SHA,
        },
    }


def outputs_table(n: int, mix: Mapping[str, Mapping[str, float]], nz: np.ndarray,
                  nz_train: np.ndarray, grid: Any, rng: np.random.Generator, *,
                  temperature: float, z_temperature: float, first_id: int = 0
                  ) -> tuple[Any, Any]:
    """Raw outputs and truth of ``n`` synthetic objects, as two pyarrow tables.

    Returns
    -------
    (outputs, truth)
        ``outputs``: object_id, morph_<q>_<a>_raw, z_pdf (list<float16>), z_mean ...
        ``truth``: object_id, the simulator's label columns and ``z_true``.
    """
    import pyarrow as pa

    from ..morphology.labels import decode
    from ..morphology.tree import QUESTIONS, column_name
    from ..photoz.summary import pdf_summary
    from ..calibrate.groups import list_array

    targets = syn.draw_tree(n, mix, rng)
    raw, _ = syn.tree_outputs(targets, rng, temperature=temperature)
    z = syn.draw_z(n, nz, grid, rng)
    pdf = np.concatenate([syn.photoz_outputs(z[i:i + 4096], nz_train, grid, rng,
                                             temperature=z_temperature)[0]
                          for i in range(0, n, 4096)]) if n else np.zeros((0, grid.n_bins))
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    cols: dict[str, Any] = {"object_id": pa.array(ids)}
    for q in QUESTIONS:
        for k, a in enumerate(q.answers):
            cols[column_name(q.name, a)] = pa.array(raw[q.name][:, k].astype(np.float32))
    cols["z_pdf"] = list_array(pdf)
    for name, v in pdf_summary(pdf, grid).items():
        cols[name] = pa.array(v.astype(np.float32))
    truth: dict[str, Any] = {"object_id": pa.array(ids)}
    for name, v in decode(targets).items():
        truth[name] = pa.array(v.tolist())
    truth["z_true"] = pa.array(z)
    return pa.table(cols), pa.table(truth)


def write_survey(root: str | Path, outputs: Any, models: Mapping[str, str | Path],
                 models_meta: list[dict[str, Any]], *, per_tile: int = 5000,
                 grid: Any = None, config: Mapping[str, Any] | None = None,
                 prefix: str = "syn") -> Path:
    """Split a table of model outputs into tile catalogs and write a config for them.

    Parameters
    ----------
    root : path
        Directory for ``tiles.tsv``, ``config.yaml`` and ``results/tiles/<tile>/``.
    outputs : pyarrow.Table
        Raw model output columns (catalog names), one row per object; ``object_id``
        and ``tile`` are (re)assigned here.
    models : mapping
        Model name -> model directory (``infer.model_dirs``).
    models_meta : list of dict
        The tile catalogs' ``tilecat.models`` entries (name, version, sha256).
    per_tile : int
        Objects per tile.
    grid : ZGrid, optional
        Written as ``tilecat.z_grid`` when photo-z columns are present.
    config : mapping, optional
        Config sections merged over the defaults (e.g. ``aggregate``, ``survey``).

    Returns
    -------
    Path
        The config file.
    """
    import pyarrow as pa
    import yaml

    from ..parquetmeta import with_metadata, write_table
    from ..photoz.grid import META_KEY

    root = Path(root)
    results = root / "results"
    n = outputs.num_rows
    tiles = [f"{prefix}{k:04d}" for k in range(max(1, -(-n // per_tile)))]
    extra: dict[str, Any] = {"tilecat.models": models_meta}
    if grid is not None:
        extra[META_KEY] = grid.to_meta()
    for k, tile in enumerate(tiles):
        part = outputs.slice(k * per_tile, per_tile)
        for name in ("object_id", "tile"):
            if name in part.column_names:
                part = part.drop_columns([name])
        m = part.num_rows
        part = part.add_column(0, "object_id",
                               pa.array(np.arange(1, m + 1, dtype=np.int64) + k * 1_000_000))
        part = part.add_column(1, "tile", pa.array([tile] * m))
        part = with_metadata(part, {}, {}, {**extra, "tilecat.tile": tile})
        d = results / "tiles" / tile
        d.mkdir(parents=True, exist_ok=True)
        write_table(part, d / "catalog.parquet")
    (root / "tiles.tsv").write_text("tile\tindex\n" + "".join(f"{t}\t{k}\n"
                                                              for k, t in enumerate(tiles)))
    cfg: dict[str, Any] = {
        "survey": {"name": "synthetic", "bands": ["r"], "pixel_scale": 0.2,
                   "zeropoints": {"r": 22.5},
                   "files": {"image": {"pattern": str(root / "{tile}" / "{tile}-{band}.fits")}}},
        "tiles": str(root / "tiles.tsv"),
        "results": str(results),
        "infer": {"model_dirs": {k: str(v) for k, v in models.items()}},
        "aggregate": {"tiles_per_file": 4},
        "dask": {"scheduler": "threads", "workers": 2},
    }
    for key, value in (config or {}).items():
        if isinstance(value, Mapping) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_synthetic_survey(root: str | Path, *, mix: Mapping[str, Mapping[str, float]],
                           nz: np.ndarray, n_tiles: int = 10, per_tile: int = 5000,
                           n_labelled: int = 30000, seed: int = 0, temperature: float = 0.6,
                           z_temperature: float = 0.7, nz_train: np.ndarray | None = None,
                           config: Mapping[str, Any] | None = None) -> SyntheticSurvey:
    """Write a synthetic survey (cards, labelled set, tile catalogs, truth, config).

    Parameters
    ----------
    root : path
        Output directory.
    mix : mapping
        The survey's answer priors per question (:data:`tilecat.priors.synthetic.TRAIN_MIX`
        layout).
    nz : ndarray (K,)
        The survey's N(z) on the default redshift grid.
    n_tiles, per_tile : int
        Tiles and objects per tile.
    n_labelled : int
        Objects of the calibration set (training mix and training N(z)).
    seed : int
    temperature, z_temperature : float
        Distortion of the raw morphology / photo-z outputs (< 1: overconfident).
    nz_train : ndarray (K,), optional
        Training N(z) (default ``nz_shape(grid, 0.35)``).
    config : mapping, optional
        Config sections merged over the defaults (e.g. ``aggregate``, ``survey``).

    Returns
    -------
    SyntheticSurvey
        The survey's tile ``k`` holds objects ``k * 1e6 + 1 ...``; ``truth`` has the
        same ``object_id`` values.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..calibrate.run import write_card
    from ..parquetmeta import write_table
    from ..photoz.grid import DEFAULT_GRID, META_KEY

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    grid = DEFAULT_GRID
    nzt = syn.nz_shape(grid, 0.35) if nz_train is None else np.asarray(nz_train, float)
    models = {}
    for name, card in synthetic_cards(nzt, grid).items():
        d = root / "models" / name
        d.mkdir(parents=True, exist_ok=True)
        write_card(card, d)
        models[name] = d
    rng = np.random.default_rng([seed, 0])
    lab, lab_truth = outputs_table(n_labelled, syn.TRAIN_MIX, nzt, nzt, grid, rng,
                                   temperature=temperature, z_temperature=z_temperature)
    labelled = root / "labelled.parquet"
    table = lab
    for name in lab_truth.column_names[1:]:
        table = table.append_column(name, lab_truth[name])
    write_table(table.replace_schema_metadata({META_KEY.encode(): json.dumps(grid.to_meta())}),
                labelled)
    outs, truths = [], []
    for k in range(n_tiles):
        trng = np.random.default_rng([seed, 1, k])
        out, truth = outputs_table(per_tile, mix, nz, nzt, grid, trng, temperature=temperature,
                                   z_temperature=z_temperature, first_id=k * 1_000_000 + 1)
        outs.append(out)
        truths.append(truth)
    models_meta = [{"name": "morphology", "version": "synthetic", "sha256": MORPH_SHA},
                   {"name": "photoz", "version": "synthetic", "sha256": PHOTOZ_SHA}]
    config_path = write_survey(root, pa.concat_tables(outs), models, models_meta,
                               per_tile=per_tile, grid=grid, config=config)
    truth_path = root / "truth.parquet"
    pq.write_table(pa.concat_tables(truths), truth_path)
    return SyntheticSurvey(root=root, config=config_path, labelled=labelled, truth=truth_path,
                           models=models)
