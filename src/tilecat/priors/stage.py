"""The aggregate step's probability stage: calibrate, estimate survey priors, correct.

For every model in the tile catalogs with probability outputs (morphology questions,
the photo-z PDF) the survey catalog gets, besides the ``_raw`` columns of the tiles:

``<prob>_cal``
    The raw probabilities through the model card's calibration map
    (:mod:`tilecat.calibrate`; identity when the card has none).
``<prob>_post``
    The calibrated probabilities prior-corrected (:func:`tilecat.priors.formula.correct`)
    to the survey's priors: given in ``survey.priors``, else estimated by EM over all
    tiles (:mod:`tilecat.priors.em`), else (``aggregate.estimate_priors: false``, or a
    group without a passed EM self-test in its model card, or with a failed EM transfer
    test, or whose survey data do not reject the training prior in the shift test) the
    priors of the calibrated outputs, which leaves ``_post`` equal to ``_cal``. ``P_T``
    is the training prior of the card, or the labelled set's class fractions for
    calibration maps that set the class balance (:func:`tilecat.calibrate.card.card_priors`).

For photo-z the list columns are ``z_pdf`` (raw), ``z_pdf_cal`` and ``z_pdf_post``, and
the summary statistics of the corrected PDF are ``z_mean_post``, ``z_median_post``,
``z_mode_post``, ``z_std_post`` and ``z_odds_post`` (``z_mean`` ... stay those of the
raw PDF, as the tiles have them). The survey N(z) is estimated on the model's bin
grid over galaxies (objects weighted by 1 - P(artifact) when morphology is present),
by smoothed EM (``aggregate.nz_smooth`` passes of a [1, 2, 1] / 4 kernel per step).
EM is MAP-EM with a weak Dirichlet prior centred on ``P_T`` (``aggregate.em_prior_strength``
pseudo-objects; for the N(z), spread over its many bins, ``aggregate.nz_prior_strength``).

Detect, then correct: after EM one more pass over the survey tests, for every
estimated group, whether the data reject the training prior
(:func:`tilecat.priors.em.shift_test`: likelihood ratio for answers, a smooth
location/width score test for the N(z)); at level ``aggregate.shift_test_alpha``
(default 0.01) a group without a significant shift keeps ``P_T`` (``_post`` =
``_cal``). On a survey with the training mix EM otherwise only fits noise and
calibration residuals.

Priors used, the EM log and the shift tests go into the file metadata
(``tilecat.priors``), the calibration maps into ``tilecat.calibration``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..calibrate.calibrators import Calibrator
from ..calibrate.groups import STAGES, Z_SUMMARY, ProbGroup, group_values, list_array
from ..errors import InputError, ModelError
from .em import (EM_PRIOR_STRENGTH, NZ_PRIOR_STRENGTH, NZ_TILT_DEGREE, SHIFT_TEST_ALPHA, Block,
                 EMResult, PriorGroup, prepare_block, run_em)
from .formula import correct

__all__ = ["Correction", "plan_correction", "PRIORS_KEY", "CALIBRATION_KEY", "MODELS"]

#: file-metadata keys written by the stage
PRIORS_KEY = "tilecat.priors"
CALIBRATION_KEY = "tilecat.calibration"
#: models whose outputs are probability vectors
MODELS: tuple[str, ...] = ("morphology", "photoz")


def _thin_log(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """EM log kept in the metadata: iterations 1-10, every 10th, and the last."""
    keep = [r for r in log if r["iter"] <= 10 or r["iter"] % 10 == 0 or r is log[-1]]
    return [{"iter": r["iter"], "max_change": float(f"{r['max_change']:.4g}"),
             "loglik": {k: round(v, 4) for k, v in r["loglik"].items()}} for r in keep]


@dataclass
class Correction:
    """Calibration maps and priors of the probability groups of a survey catalog.

    Attributes
    ----------
    groups : list of ProbGroup
        Morphology questions (tree order), then the photo-z group.
    calibrators : dict
        Group name -> calibration map from the model card.
    prior_groups : list of PriorGroup
        The same groups for EM (training priors, given priors, tree paths).
    models : dict
        Model name -> {"version", "sha256", "calibration"} for the metadata.
    grid : ZGrid or None
        Photo-z bin grid.
    em_tol, em_max_iter : float, int
        EM convergence tolerance and iteration cap.
    self_tests : dict
        Group name -> the card's EM self-test (:mod:`tilecat.calibrate.selftest`); EM
        runs only on groups that passed it (``aggregate.em_require_self_test``).
    transfer_tests : dict
        Group name -> the card's EM transfer test (a check set in other observing
        conditions), where the card has one; EM runs only on groups that passed it too.
    shift_alpha : float
        Level of the shift test of each EM estimate (:func:`tilecat.priors.em.shift_test`,
        ``aggregate.shift_test_alpha``); 0: tests recorded, EM estimates always used.
    result : EMResult or None
        Set by :meth:`estimate`.
    """

    groups: list[ProbGroup]
    calibrators: dict[str, Calibrator]
    prior_groups: list[PriorGroup]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: Any = None
    em_tol: float = 1e-6
    em_max_iter: int = 1000
    self_tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    transfer_tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    shift_alpha: float = SHIFT_TEST_ALPHA
    result: EMResult | None = None

    # ----------------------------------------------------------------- columns
    def raw_columns(self) -> list[str]:
        """Columns the stage reads from the tile catalogs."""
        return [c for g in self.groups for c in g.columns("raw")]

    def calibrated(self, table: Any) -> dict[str, np.ndarray]:
        """Group name -> calibrated probabilities ``(n, K)`` float64 of ``table``'s rows."""
        return {g.name: self.calibrators[g.name].apply(group_values(table, g))
                for g in self.groups}

    def block(self, paths: Sequence[str | Path]) -> Block:
        """The EM block of some tiles: calibrated probabilities (float32) per group.

        Reads only the raw probability columns of each tile catalog.
        """
        import pyarrow.parquet as pq

        parts = [self.calibrated(pq.read_table(p, columns=self.raw_columns())) for p in paths]
        return prepare_block({g.name: np.concatenate([q[g.name] for q in parts])
                              for g in self.groups})

    # ------------------------------------------------------------------ priors
    def estimate(self, map_reduce: Any) -> EMResult:
        """Run EM and the shift tests (:func:`tilecat.priors.em.run_em`) with the given
        map-reduce; keep the result."""
        self.result = run_em(self.prior_groups, map_reduce, tol=self.em_tol,
                             max_iter=self.em_max_iter, shift_alpha=self.shift_alpha)
        return self.result

    def kept_training(self) -> list[str]:
        """Groups EM estimated whose shift test was not significant (they keep ``P_T``)."""
        tests = self.result.tests if self.result is not None else {}
        return [g.name for g in self.prior_groups if tests.get(g.name, {}).get("gated")]

    def priors(self) -> dict[str, np.ndarray]:
        """Prior used per group (after :meth:`estimate`; before it, given or training)."""
        if self.result is not None:
            return self.result.priors
        return {g.name: g.initial() for g in self.prior_groups}

    # ------------------------------------------------------------------- apply
    def apply(self, table: Any, tile: str = "-") -> Any:
        """``table`` with the ``_cal`` and ``_post`` columns (and photo-z ``*_post`` summaries).

        Raises
        ------
        InputError
            The table lacks a raw probability column.
        """
        import pyarrow as pa

        missing = [c for c in self.raw_columns() if c not in table.column_names]
        if missing:
            raise InputError(tile, "catalog.parquet", f"probability columns {missing} missing "
                             "(catalogs made with other models? rerun the tiles)")
        cal = self.calibrated(table)
        pt = {g.name: g.prior_train for g in self.prior_groups}
        priors = self.priors()
        post = {name: correct(p, pt[name], priors[name]) for name, p in cal.items()}
        for stage, values in (("cal", cal), ("post", post)):
            for g in self.groups:
                names = g.columns(stage)
                if g.list_column:
                    table = table.append_column(names[0], list_array(values[g.name]))
                else:
                    for k, c in enumerate(names):
                        table = table.append_column(
                            c, pa.array(values[g.name][:, k].astype(np.float32)))
        if self.grid is not None and "z" in post:
            from ..photoz.summary import pdf_summary

            summary = pdf_summary(post["z"], self.grid)
            for name in Z_SUMMARY:
                table = table.append_column(f"{name}_post",
                                            pa.array(summary[name].astype(np.float32)))
        return table

    # ---------------------------------------------------------------- metadata
    def descriptions(self) -> dict[str, str]:
        """Descriptions of the columns the stage adds."""
        out: dict[str, str] = {}
        for g in self.groups:
            for stage in STAGES[1:]:
                what = ("calibrated (model card calibration map)" if stage == "cal" else
                        "calibrated and prior-corrected to the survey priors (metadata "
                        "tilecat.priors): use this one")
                if g.list_column:
                    out[g.columns(stage)[0]] = (f"photo-z PDF over the bins of tilecat.z_grid, "
                                                f"{what}")
                else:
                    for a, c in zip(g.labels, g.columns(stage)):
                        out[c] = f"P({g.name}={a} | question applies), {what}"
        if self.grid is not None and any(g.list_column for g in self.groups):
            for name in Z_SUMMARY:
                out[f"{name}_post"] = f"{name} recomputed from z_pdf_post"
        return out

    def file_metadata(self) -> dict[str, Any]:
        """``tilecat.priors`` and ``tilecat.calibration`` entries (JSON-able)."""
        priors = self.priors()
        res = self.result
        groups = {}
        for g, pg in zip(self.groups, self.prior_groups):
            entry: dict[str, Any] = {
                "model": g.model,
                "source": self._source(pg),
                "train": [round(float(v), 8) for v in pg.prior_train],
                "used": [round(float(v), 8) for v in priors[g.name]],
                "n_eff": None if res is None else round(res.n_eff.get(g.name, 0.0), 3),
            }
            if not g.list_column:
                entry["labels"] = list(g.labels)
            else:
                entry["labels"] = "bin centres of tilecat.z_grid"
            if g.name in self.self_tests:
                entry["em_self_test"] = self.self_tests[g.name]
            if g.name in self.transfer_tests:
                entry["em_transfer_test"] = self.transfer_tests[g.name]
            if res is not None and g.name in res.tests:
                entry["shift_test"] = _test_meta(res.tests[g.name])
            if pg.parents:
                entry["applies_when"] = [[p, [self._labels(p)[i] for i in idx]]
                                         for p, idx in pg.parents]
            groups[g.name] = entry
        em = None
        if res is not None:
            em = {"tol": self.em_tol, "max_iter": self.em_max_iter, "n_iter": res.n_iter,
                  "converged": res.converged, "shift_test_alpha": self.shift_alpha,
                  "shift_test": "EM estimates are used only where the survey rejects the "
                                "training prior at level shift_test_alpha (0: always): "
                                "answers, likelihood ratio 2 [LL(EM) - LL(P_T)] vs "
                                "chi2(K - 1), two-sample (times m / (m + n_eff), m the "
                                "calibration set's labelled objects) unless "
                                "aggregate.shift_test_labelled is false; N(z), Neyman "
                                "smooth score test of a "
                                "location/width change of P_T vs chi2(2) "
                                "(tilecat.priors.em.shift_test)",
                  "log": _thin_log(res.log)}
        priors_meta = {"formula": "P(c|x) = P_T(c|x) P(c)/P_T(c) / sum_c' (...) "
                                  "(Saerens et al. 2002)",
                       "columns": "<prob>_raw (model), <prob>_cal (calibrated), <prob>_post "
                                  "(calibrated + prior-corrected); photo-z: z_pdf, z_pdf_cal, "
                                  "z_pdf_post, z_<stat>_post",
                       "groups": groups, "em": em}
        return {PRIORS_KEY: priors_meta, CALIBRATION_KEY: self.models}

    def _source(self, pg: PriorGroup) -> str:
        """``given``, ``em`` or ``training`` with the reason EM was not used."""
        test = (self.result.tests if self.result is not None else {}).get(pg.name)
        if pg.source == "em" and test is not None and test["gated"]:
            return (f"training: no significant shift from the training prior ({test['test']} "
                    f"{test['statistic']:.2f}, dof {test['dof']}, p {test['p_value']:.3g} >= "
                    f"alpha {test['alpha']:g})")
        if pg.source != "training":
            return pg.source
        test = self.self_tests.get(pg.name)
        if test is None:
            return ("training: no EM self-test in the model card (run tilecat calibrate), "
                    "or EM disabled")
        if not test.get("ok"):
            return "training: EM self-test failed on the calibration set"
        transfer = self.transfer_tests.get(pg.name)
        if transfer is not None and not transfer.get("ok"):
            return "training: EM transfer test failed on the check set (other conditions)"
        return "training: EM disabled (aggregate.estimate_priors)"

    def _labels(self, name: str) -> tuple[str, ...]:
        return next(g.labels for g in self.groups if g.name == name)


def _test_meta(test: Mapping[str, Any]) -> dict[str, Any]:
    """A shift test (:func:`tilecat.priors.em.shift_test`) for the metadata, rounded."""
    return {"test": test["test"], "statistic": round(float(test["statistic"]), 4),
            "dof": int(test["dof"]), "p_value": float(f"{test['p_value']:.4g}"),
            "alpha": float(test["alpha"]),
            "significant": bool(test["p_value"] < test["alpha"]) if test["alpha"] > 0 else None,
            "used_em": not test["gated"],
            "loglik_gain": round(float(test["loglik_gain"]), 4),
            "n_eff": round(float(test["n_eff"]), 2),
            **({"n_labelled": float(test["n_labelled"])} if "n_labelled" in test else {})}


def _models_meta(schema: Any) -> list[dict[str, Any]]:
    meta = schema.metadata or {}
    try:
        return list(json.loads(meta.get(b"tilecat.models", b"[]")) or [])
    except json.JSONDecodeError:
        return []


def plan_correction(config: Mapping[str, Any], schema: Any) -> Correction | None:
    """The probability stage for catalogs of ``schema``, or None when they have no
    probability outputs (no morphology/photoz model ran).

    Parameters
    ----------
    config : dict
        Validated configuration (``survey.priors``, ``aggregate.em_tol``,
        ``aggregate.em_max_iter``, ``aggregate.estimate_priors``,
        ``aggregate.shift_test_alpha``, ``infer.model_dirs``).
    schema : pyarrow.Schema
        Schema (with metadata) of a tile catalog.

    Raises
    ------
    ModelError
        A model's card cannot be found, or its weights differ from those that made the
        tile catalogs (sha256 in the catalogs' ``tilecat.models``).
    ConfigError
        Bad ``survey.priors``.
    """
    from ..calibrate.card import card_calibrators, card_priors
    from ..calibrate.groups import card_groups
    from ..infer.heads import model_location
    from ..models import load_card
    from .given import given_priors
    from .tree import GALAXY_PATH, parents, path_indices

    models = [m for m in _models_meta(schema) if m.get("name") in MODELS]
    if not models:
        return None
    groups: list[ProbGroup] = []
    calibrators: dict[str, Calibrator] = {}
    cal_priors: dict[str, np.ndarray] = {}
    self_tests: dict[str, dict[str, Any]] = {}
    transfer_tests: dict[str, dict[str, Any]] = {}
    n_labelled: dict[str, float] = {}  # labelled objects each class map was fitted on
    info: dict[str, dict[str, Any]] = {}
    grid = None
    for m in sorted(models, key=lambda m: MODELS.index(m["name"])):
        where = model_location(config, m["name"])
        card = load_card(where)
        if m.get("sha256") and card.get("sha256") != m["sha256"]:
            raise ModelError(f"model {m['name']!r} ({where}): weights sha256 "
                             f"{card.get('sha256')} differ from those that made the tile "
                             f"catalogs ({m['sha256']}); rerun infer or point "
                             "infer.model_dirs at the model used")
        mg = card_groups(card)
        cols = [c for g in mg for c in g.columns("raw")]
        if not all(c in schema.names for c in cols):
            continue
        if m["name"] == "photoz":
            from ..photoz.grid import ZGrid

            grid = ZGrid.from_meta(card["z_grid"])
            meta = schema.metadata or {}
            if b"tilecat.z_grid" in meta and ZGrid.from_meta(
                    json.loads(meta[b"tilecat.z_grid"])) != grid:
                raise ModelError("photoz: the tile catalogs' z grid differs from the model card's")
        groups += mg
        calibrators.update(card_calibrators(card))
        cal_priors.update(card_priors(card))
        section = card.get("calibration") or {}
        for name, metrics in (section.get("metrics") or {}).items():
            if "em_self_test" in metrics:
                self_tests[name] = metrics["em_self_test"]
            if "em_transfer_test" in metrics:
                transfer_tests[name] = metrics["em_transfer_test"]
            n = (metrics.get("after") or {}).get("n")
            if n:
                n_labelled[name] = float(n)
        info[m["name"]] = {"version": card.get("version"), "sha256": card.get("sha256"),
                           "method": section.get("method", "none"),
                           "pdf_method": section.get("pdf_method"),
                           "groups": {g.name: calibrators[g.name].to_dict() for g in mg},
                           "fitted_on": section.get("fitted_on")}
    if not groups:
        return None
    scfg = config.get("survey") or {}
    acfg = config.get("aggregate") or {}
    groups = [ProbGroup(g.name, g.model, g.labels, cal_priors[g.name], g.list_column)
              for g in groups]
    given = given_priors(scfg.get("priors") or {}, groups, grid)
    estimate = bool(acfg.get("estimate_priors", True))
    require = bool(acfg.get("em_require_self_test", True))
    two_sample = bool(acfg.get("shift_test_labelled", True))
    answers = {g.name: g.labels for g in groups if not g.list_column}
    pgroups = []
    for g in groups:
        if g.list_column:
            path = path_indices(GALAXY_PATH, answers) if "t" in answers else ()
        else:
            path = parents(g.name, answers)
        trusted = not require or (self_tests.get(g.name, {}).get("ok") is True
                                  and transfer_tests.get(g.name, {}).get("ok", True) is True)
        pgroups.append(PriorGroup(g.name, g.labels, g.prior_train, given.get(g.name),
                                  estimate and trusted, path,
                                  int(acfg.get("nz_smooth", 1)) if g.list_column else 0,
                                  float(acfg.get("nz_prior_strength", NZ_PRIOR_STRENGTH))
                                  if g.list_column else
                                  float(acfg.get("em_prior_strength", EM_PRIOR_STRENGTH)),
                                  tilt_degree=NZ_TILT_DEGREE if g.list_column else 0,
                                  # shift_test uses it for classes only
                                  n_labelled=n_labelled.get(g.name, 0.0) if two_sample
                                  else 0.0))
    alpha = acfg.get("shift_test_alpha", SHIFT_TEST_ALPHA)
    return Correction(groups=groups, calibrators=calibrators, prior_groups=pgroups,
                      models=info, grid=grid, em_tol=float(acfg.get("em_tol", 1e-6)),
                      em_max_iter=int(acfg.get("em_max_iter", 1000)), self_tests=self_tests,
                      transfer_tests=transfer_tests, shift_alpha=float(alpha or 0.0))
