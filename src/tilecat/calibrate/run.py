"""``tilecat calibrate MODEL``: refit a model's calibration on a labelled set.

The new parameters go into the model card (section ``calibration``); the weights are
untouched, so the card's sha256 of the weights stays valid. With ``out`` the model
directory is copied there first (weights + new card), e.g. to recalibrate a shipped
model for one survey without changing the package.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import atomic_path

__all__ = ["run_calibrate", "write_card"]


def write_card(card: dict[str, Any], directory: str | Path) -> Path:
    """Write ``card.json`` into ``directory`` atomically (same format as ``save_model``)."""
    from ..models import CARD_NAME

    path = Path(directory) / CARD_NAME
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return path


def run_calibrate(model: str | Path, data: str | Path, *, method: str = "bcts",
                  pdf_method: str = "bcts+pit",
                  out: str | Path | None = None, limit: int | None = None,
                  batch_size: int = 256, log: Callable[[str], None] = print,
                  check: str | Path | None = None) -> dict[str, Any]:
    """Fit calibration maps for ``model`` on the labelled set ``data`` and store them.

    Parameters
    ----------
    model : str or path
        Model directory, or the name of a shipped model (``morphology``, ``photoz``).
    data : path
        Labelled set: Parquet of the model's raw outputs + truth columns, or a galaxy
        stamp set (Zarr) that the model is run over (:mod:`tilecat.calibrate.labelled`).
    method : {"bcts", "temperature", "isotonic", "identity"}
        Map of class probabilities (morphology questions): bias-corrected temperature
        scaling (default), temperature scaling, isotonic regression.
    pdf_method : {"bcts+pit", "pit", "temperature", "identity"}
        Map of photo-z PDFs: BCTS over the redshift bins followed by the PIT-CDF map
        (default), the PIT-CDF map alone, or temperature scaling.
    out : path, optional
        Write the recalibrated model (weights copied, new card) to this directory;
        default: update the card in place.
    limit : int, optional
        Use only the first ``limit`` labelled objects.
    batch_size : int
        Inference batch size when running the model over stamps.
    log : callable
        Progress output.
    check : path, optional
        A second labelled set (same forms as ``data``) observed in other conditions:
        the EM transfer test runs on it (:func:`tilecat.calibrate.selftest.tree_transfer_test`);
        a group that fails it is not corrected by EM in the aggregate step.

    Returns
    -------
    dict
        The card as written.

    Raises
    ------
    ModelError
        Unknown model, checksum mismatch, or a model without probability outputs.
    InputError
        The labelled set is missing or lacks the needed columns.
    ValueError
        Unknown method.
    """
    from ..models import load_card, model_dir
    from .card import fit_card_calibration
    from .labelled import load_labelled

    src = model_dir(model)
    card = load_card(src)
    if card.get("name") == "structure":  # regression: calibrate the uncertainties
        from ..structure.calibrate import calibrate_structure

        card = dict(card)
        card["uncertainty_calibration"] = calibrate_structure(
            card, src, data, limit=limit, batch_size=batch_size, log=log)
        return _write(card, src, out, log)
    labelled = load_labelled(card, src, data, limit=limit, batch_size=batch_size, log=log)
    checked = None
    if check is not None:
        checked = load_labelled(card, src, check, limit=limit, batch_size=batch_size, log=log)
    section = fit_card_calibration(card, labelled.probs, targets=labelled.targets,
                                   z_true=labelled.z_true, method=method,
                                   pdf_method=pdf_method, source=labelled.source,
                                   check=checked)
    for name, m in section["metrics"].items():
        b, a = m["before"], m["after"]
        if "ece" in b:
            log(f"{card['name']}/{name}: n={b['n']} ECE {b['ece']:.4f} -> {a['ece']:.4f}, "
                f"Brier {b['brier']:.4f} -> {a['brier']:.4f}  ({section['groups'][name]})")
        else:
            log(f"{card['name']}/{name}: n={b['n']} PIT KS {b['pit_ks']:.4f} -> "
                f"{a['pit_ks']:.4f}, CRPS {b['crps']:.4f} -> {a['crps']:.4f}")
        for test in ("em_self_test", "em_transfer_test"):
            if test in m:
                t = m[test]
                log(f"{card['name']}/{name}: {test.replace('_', ' ')} "
                    f"{'passed' if t['ok'] else 'FAILED'} (error {t['error']:.4f}, "
                    f"tolerance {t['tolerance']:.4f}, n {t['n']})")
    card = dict(card)
    card["calibration"] = section
    return _write(card, src, out, log)


def _write(card: dict[str, Any], src: Path, out: str | Path | None,
           log: Callable[[str], None]) -> dict[str, Any]:
    """Write ``card`` in place, or with a copy of the weights to ``out``."""
    dest = src
    if out is not None:
        dest = Path(out)
        dest.mkdir(parents=True, exist_ok=True)
        weights = str(card.get("weights", "weights.safetensors"))
        if (dest / weights).resolve() != (src / weights).resolve():
            with atomic_path(dest / weights) as tmp:
                shutil.copyfile(src / weights, tmp)
    write_card(card, dest)
    log(f"calibration written to {dest / 'card.json'}")
    return card
