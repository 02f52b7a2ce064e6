"""Labelled sets for (re)calibration: model outputs + truth, from Parquet or from stamps.

Two forms are accepted by :func:`load_labelled`:

Parquet (``*.parquet``)
    A table of the model's raw outputs with the catalog's column names
    (``morph_<q>_<a>_raw`` for morphology; ``z_pdf`` with the grid in the file
    metadata ``tilecat.z_grid`` for photo-z) and truth columns: the morphology labels
    of the simulator's ``truth.parquet`` (``t_class``, ``edge_on``, ``spiral_arms``,
    ``spin``, ``bar``, ``bulge_size``, ``merger``, ``roundness``), or the true redshift
    (``z_true``, ``redshift`` or ``z_spec``). A survey catalog matched to a
    spectroscopic or visually classified subsample has this form.
Zarr (a directory)
    A galaxy stamp set (``tilecat simulate-stamps --kind galaxy`` layout: ``stamps``,
    ``sigma`` and label variables along ``object``); the model is run over the stamps
    through its inference head, so the outputs equal what the pipeline writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from .groups import ProbGroup, card_groups

__all__ = ["Labelled", "load_labelled", "Z_TRUE_COLUMNS", "run_head", "stamp_outputs"]

#: accepted names of the true-redshift column, in order of preference
Z_TRUE_COLUMNS: tuple[str, ...] = ("z_true", "redshift", "z_spec")


@dataclass
class Labelled:
    """Raw model outputs of labelled objects.

    Attributes
    ----------
    probs : dict
        Group name -> float64 ``(N, K)`` raw probabilities.
    targets : dict
        Morphology: question -> answer index ``(N,)`` (-1: does not apply).
    z_true : ndarray (N,) or None
        Photo-z: true redshifts.
    source : dict
        Provenance (path, number of objects, seed of a stamp set).
    """

    probs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    z_true: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)


def _group_probs(groups: list[ProbGroup], columns: Mapping[str, Any], where: str
                 ) -> dict[str, np.ndarray]:
    out = {}
    for g in groups:
        names = g.columns("raw")
        missing = [c for c in names if c not in columns]
        if missing:
            raise InputError("-", where, f"labelled set lacks model output column(s) {missing}")
        if g.list_column:
            out[g.name] = np.asarray(columns[names[0]], np.float64)
        else:
            out[g.name] = np.stack([np.asarray(columns[c], np.float64) for c in names], axis=1)
    return out


def _targets(groups: list[ProbGroup], labels: Mapping[str, Any], where: str
             ) -> dict[str, np.ndarray]:
    from ..morphology.labels import encode
    from ..morphology.tree import QUESTIONS

    need = [q.truth for q in QUESTIONS]
    missing = [c for c in need if c not in labels]
    if missing:
        raise InputError("-", where, f"labelled set lacks morphology truth column(s) {missing}")
    t = encode({c: np.asarray(labels[c]) for c in need})
    return {q.name: t[:, j] for j, q in enumerate(QUESTIONS)}


def _z_true(labels: Mapping[str, Any], where: str) -> np.ndarray:
    for c in Z_TRUE_COLUMNS:
        if c in labels:
            return np.asarray(labels[c], np.float64)
    raise InputError("-", where, f"labelled set has no true-redshift column {list(Z_TRUE_COLUMNS)}")


def _from_parquet(card: Mapping[str, Any], path: Path, limit: int | None) -> Labelled:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError("-", str(path), f"not a readable Parquet file: {exc}") from exc
    if limit is not None:
        table = table.slice(0, int(limit))
    groups = card_groups(card)
    cols: dict[str, Any] = {}
    for name in table.column_names:
        col = table[name]
        if name == "z_pdf" or name.startswith("z_pdf"):
            cols[name] = np.asarray(col.to_pylist(), np.float64)
        else:
            cols[name] = col.to_numpy(zero_copy_only=False)
    if card.get("name") == "photoz":
        meta = table.schema.metadata or {}
        if b"tilecat.z_grid" in meta:
            from ..photoz.grid import ZGrid

            if ZGrid.from_meta(json.loads(meta[b"tilecat.z_grid"])) != ZGrid.from_meta(
                    card["z_grid"]):
                raise ModelError(f"labelled set {path}: its z grid differs from the model's")
    probs = _group_probs(groups, cols, str(path))
    out = Labelled(probs=probs, source={"path": path.name, "kind": "parquet",
                                        "n_objects": int(table.num_rows)})
    if card.get("name") == "photoz":
        out.z_true = _z_true(cols, str(path))
    else:
        out.targets = _targets(groups, cols, str(path))
    return out


def run_head(model_dir: str | Path, stamps: np.ndarray, extras: Mapping[str, np.ndarray],
             batch_size: int = 256, survey: Mapping[str, Any] | None = None
             ) -> dict[str, np.ndarray]:
    """Run a model through its inference head over stamps -> the catalog columns.

    Parameters
    ----------
    model_dir : path
        Model directory (card + weights; checksum verified).
    stamps : ndarray of float32, shape (N, B, S, S)
        arcsinh(F / sigma) stamps.
    extras : mapping
        Per-object inputs the head asks for (e.g. ``sigma`` (N, B) in nanomaggies).
    batch_size : int
    survey : mapping, optional
        The config's ``survey`` section (zeropoints); default zeropoint 22.5.

    Returns
    -------
    dict
        Column name -> array (N, ...), exactly as the head writes ``infer.parquet``.
    """
    import torch

    from ..infer.registry import get_head
    from ..models import load_card

    card = load_card(model_dir)
    head = get_head(str(card.get("name")))
    config = {"infer": {"model_dirs": {head.name: str(model_dir)}}, "survey": dict(survey or {})}
    lh = head.load(config, torch.device("cpu"))
    parts = []
    with torch.inference_mode():
        for i in range(0, len(stamps), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(stamps[i:i + batch_size], np.float32))
            n = x.shape[0]
            ex = [torch.from_numpy(np.ascontiguousarray(extras[v][i:i + batch_size], np.float32))
                  for v in lh.inputs]
            if n == 1:  # the engine pads a single object to two (batch-invariant kernels)
                x = x.expand(2, -1, -1, -1)
                ex = [t.expand(2, *t.shape[1:]) for t in ex]
            out = lh.module(x.contiguous(memory_format=torch.channels_last), *ex)
            parts.append(out.detach().float().numpy()[:n])
    raw = np.concatenate(parts) if parts else np.zeros((0,), np.float32)
    return head.postprocess(raw, lh)


def stamp_outputs(card: Mapping[str, Any], model_dir: str | Path, path: str | Path,
                  limit: int | None = None, batch_size: int = 256,
                  log: Callable[[str], None] = print
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """Run a model over a galaxy stamp set with the per-object inputs its head needs.

    Parameters
    ----------
    card : mapping
        The model card (``name`` photoz or morphology).
    model_dir : path
        Model directory.
    path : path
        Stamp set (``tilecat simulate-stamps --kind galaxy``). Photo-z keeps galaxies
        only (:func:`tilecat.photoz.data.load_photoz_set`).
    limit : int, optional
        First ``limit`` objects only.

    Returns
    -------
    columns : dict
        The head's catalog columns (N, ...).
    labels : dict
        Truth per object: photo-z ``z_true`` plus the set's optional labels
        (``t_class``, ``kind``, ...); morphology the label variables of
        :data:`tilecat.morphology.dataset.LABEL_COLUMNS`.
    attrs : dict
        The store's attributes (seed, heldout, ...).
    """
    path = Path(path)
    if card.get("name") == "photoz":
        from ..photoz.data import load_photoz_set

        ps = load_photoz_set(path, limit)
        stamps, extras = ps.stamps, {"sigma": ps.sigma}
        labels = {**ps.labels, "z_true": ps.z}
        psf, attrs = ps.psf_fwhm, ps.attrs
    else:
        from ..morphology.dataset import load_stamps

        ss = load_stamps(path, limit)
        stamps, labels, attrs, extras, psf = ss.stamps, dict(ss.labels), ss.attrs, {}, ss.psf_fwhm
    if psf is not None:  # models with the PSF input (arch use_psf / psf_input)
        extras["psf_fwhm"] = psf
    log(f"running {card.get('name')} over {len(stamps)} labelled stamps of {path}")
    return run_head(model_dir, stamps, extras, batch_size), labels, dict(attrs)


def _from_stamps(card: Mapping[str, Any], model_dir: Path, path: Path, limit: int | None,
                 batch_size: int, log: Callable[[str], None]) -> Labelled:
    groups = card_groups(card)
    cols, labels, attrs = stamp_outputs(card, model_dir, path, limit, batch_size, log)
    out = Labelled(probs=_group_probs(groups, cols, str(path)),
                   source={"path": path.name, "kind": "stamps",
                           "n_objects": int(len(next(iter(cols.values())))),
                           "seed": attrs.get("seed"), "heldout": attrs.get("heldout")})
    if card.get("name") == "photoz":
        out.z_true = np.asarray(labels["z_true"], np.float64)
    else:
        out.targets = _targets(groups, labels, str(path))
    return out


def load_labelled(card: Mapping[str, Any], model_dir: str | Path, path: str | Path, *,
                  limit: int | None = None, batch_size: int = 256,
                  log: Callable[[str], None] = print) -> Labelled:
    """Read a labelled set (Parquet of outputs + labels, or a stamp set) for a model.

    Raises
    ------
    InputError
        Missing file, or columns/variables the model's groups need.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("-", str(path), "labelled set does not exist")
    if path.is_dir():
        return _from_stamps(card, Path(model_dir), path, limit, batch_size, log)
    return _from_parquet(card, path, limit)
