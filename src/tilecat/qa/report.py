"""``tilecat report``: the survey's QA report, one self-contained HTML file.

``run_report(config)`` reads the survey catalog (``<results>/catalog.parquet``, else the
partitioned ``<results>/catalog/``) and writes ``<results>/report.html`` (atomically;
PNG figures base64-embedded; no timestamps). Sections, each saying "not available"
(with the reason) when its data are absent:

``summary``      objects, tiles, models and their checksums;
``priors``       priors used per probability group (given / EM / training) and the EM log;
``calibration``  reliability diagrams before/after calibration (the model cards'
                 calibration sets) and raw / calibrated / prior-corrected against truth;
``photoz``       PIT histograms, z_phot vs z_true, N(z) training vs estimated;
``defects``      masker ROC curves (model card metrics) and mask overlays of sampled tiles;
``galleries``    most confident objects per class (Lupton et al. 2004 colour cutouts);
``outliers``     the objects with the largest latent-space outlier score.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .html import Section, figure_html, note_html, render_page, table_html

__all__ = ["run_report", "GALLERY_CLASSES"]

#: (question, answer) galleries of the most confident objects
GALLERY_CLASSES: tuple[tuple[str, str], ...] = (
    ("t", "smooth"), ("t", "featured"), ("t", "artifact"), ("edge_on", "yes"),
    ("spiral_arms", "yes"), ("bar", "strong"), ("merger", "yes"),
)


def _read_catalog(results: Path, max_rows: int) -> tuple[Any, int]:
    """The survey catalog (without the ``latent`` vectors), at most ``max_rows`` rows.

    Larger catalogs are subsampled while streaming (each row kept with probability
    max_rows / total, fixed seed: the same sample every time).

    Returns
    -------
    (pyarrow.Table, int)
        The rows read (in catalog order, with the file's schema metadata) and the
        catalog's total number of rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..errors import InputError

    single = results / "catalog.parquet"
    files = [single] if single.is_file() else sorted((results / "catalog").glob("part-*.parquet"))
    if not files:
        raise InputError("-", str(single), "no survey catalog (run `tilecat aggregate` first)")
    schema = pq.read_schema(files[0])
    cols = [c for c in schema.names if c != "latent"]
    total = sum(pq.read_metadata(f).num_rows for f in files)
    frac = min(1.0, max_rows / max(total, 1))
    rng = np.random.default_rng(0)
    batches = []
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=65536, columns=cols):
            if frac < 1.0:
                batch = batch.filter(pa.array(rng.random(batch.num_rows) < frac))
            batches.append(batch)
    table = pa.Table.from_batches(batches, schema=pa.schema([schema.field(c) for c in cols]))
    return table.replace_schema_metadata(schema.metadata), total


def _meta(table: Any, key: str) -> Any:
    raw = (table.schema.metadata or {}).get(key.encode())
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw.decode()


def _card(config: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    from ..infer.heads import model_location
    from ..models import load_card

    try:
        return load_card(model_location(config, name))
    except Exception:  # no card: the section says so
        return None


# ------------------------------------------------------------------------ sections
def _summary(table: Any, config: Mapping[str, Any], matched: int | None, total: int,
             n_tiles: int) -> Section:
    s = Section("summary", "Survey")
    models = _meta(table, "tilecat.models") or []
    sample = table.num_rows if table.num_rows == total else (
        f"{table.num_rows} (random sample used by every figure; report.max_rows)")
    rows = [["survey", config["survey"]["name"]], ["objects", total],
            ["objects in the report", sample],
            ["tiles", n_tiles], ["columns", table.num_columns],
            ["config hash", _meta(table, "tilecat.config_hash") or ""],
            ["truth-matched objects", "no truth" if matched is None else matched]]
    s.add(table_html(["", "value"], rows, left=2))
    if models:
        s.add(table_html(["model", "version", "weights sha256"],
                         [[m.get("name"), m.get("version"), m.get("sha256")] for m in models],
                         left=3))
    else:
        s.add(note_html("No galaxy models ran: the catalog holds detection and photometry only."))
    return s


def _priors(table: Any) -> Section:
    from .figures import em_figure

    s = Section("priors", "Survey priors")
    meta = _meta(table, "tilecat.priors")
    if not meta:
        s.not_available("priors", "the catalog has no probability columns")
        return s
    s.add(note_html("Prior correction P(c|x) = P_T(c|x) P(c)/P_T(c) / normalisation "
                    "(Saerens et al. 2002) of the calibrated probabilities; columns "
                    "<prob>_raw (model), <prob>_cal (calibrated), <prob>_post "
                    "(prior-corrected: use these)."))
    from ..morphology.tree import QUESTIONS

    order = [q.name for q in QUESTIONS] + ["z"]
    rows = []
    for name, g in sorted(meta["groups"].items(),
                          key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        if isinstance(g.get("labels"), list):
            tr = ", ".join(f"{a} {v:.3f}" for a, v in zip(g["labels"], g["train"]))
            us = ", ".join(f"{a} {v:.3f}" for a, v in zip(g["labels"], g["used"]))
        else:
            tr, us = "N(z) (see photo-z section)", "N(z) (see photo-z section)"
        tests = []
        for key, what in (("em_self_test", "self-test"), ("em_transfer_test", "transfer")):
            st = g.get(key)
            if st:
                tests.append(f"{what} {'passed' if st['ok'] else 'FAILED'}: error "
                             f"{st['error']:.3f} (tolerance {st['tolerance']:.3f}, n {st['n']})")
        rows.append([name, g["source"], g.get("n_eff"), tr, us, "; ".join(tests),
                     _shift_test_text(g.get("shift_test"))])
    s.add(table_html(["group", "source", "objects (weighted)", "prior of calibrated outputs",
                      "prior used", "EM self-test (calibration set) / transfer test",
                      "shift test"], rows, left=2))
    s.add(note_html("EM self-test: the calibration map is fitted on half of the model's "
                    "labelled calibration set and EM run on the other half, which has a known "
                    "class mix; transfer test (when the card has one): the map fitted on the "
                    "whole calibration set, EM run on a labelled check set observed in other "
                    "conditions. Groups failing either are not corrected by EM "
                    "(aggregate.em_require_self_test)."))
    em = meta.get("em")
    if em and "shift_test_alpha" in em:
        alpha = em["shift_test_alpha"]
        s.add(note_html("Shift test (detect, then correct): an EM estimate is used only where "
                        "the survey rejects the prior of the calibrated outputs "
                        + (f"at level {alpha:g}" if alpha else "(disabled: always used)")
                        + "; answers: likelihood ratio of the EM estimate vs chi2(K - 1), "
                        "two-sample where the card gives the size of the labelled set the "
                        "calibration was fitted on (aggregate.shift_test_labelled); "
                        "N(z): Neyman smooth test of a location/width change vs chi2(2) "
                        "(aggregate.shift_test_alpha)."))
    if em and em.get("log"):
        s.add(note_html(f"EM: {em['n_iter']} iterations, "
                        f"{'converged' if em['converged'] else 'NOT converged'} "
                        f"(tolerance {em['tol']:g}, cap {em['max_iter']})."))
        s.add(figure_html(em_figure(em["log"]), "EM convergence"))
    elif em:
        s.add(note_html("EM: nothing to estimate (all priors given or disabled)."))
    return s


def _shift_test_text(test: Mapping[str, Any] | None) -> str:
    """One table cell for a group's shift test (metadata ``shift_test``), '' without one."""
    if not test:
        return ""
    verdict = ("EM estimate used" if test.get("used_em") else
               "not significant: training prior kept")
    return (f"{test['test']} {test['statistic']:.2f}, dof {test['dof']}, "
            f"p {test['p_value']:.3g}: {verdict}")


def _calibration(table: Any, config: Mapping[str, Any], truth: Any) -> Section:
    from ..morphology.labels import encode
    from .figures import reliability_figure
    from .scores import catalog_groups, morphology_scores

    s = Section("calibration", "Calibration")
    card = _card(config, "morphology") if "morphology" in {
        m.get("name") for m in (_meta(table, "tilecat.models") or [])} else None
    cal = (card or {}).get("calibration") or {}
    if cal.get("metrics"):
        from ..morphology.tree import QUESTIONS

        panels, rows = {}, []
        for q in [q.name for q in QUESTIONS if q.name in cal["metrics"]]:
            m = cal["metrics"][q]
            panels[q] = {"before": m.get("reliability_before", []),
                         "after": m.get("reliability_after", [])}
            group = {k: v for k, v in (cal["groups"].get(q) or {}).items() if k != "prior"}
            rows.append([q, m["before"]["n"], m["before"]["ece"], m["after"]["ece"],
                         m["before"]["brier"], m["after"]["brier"], json.dumps(group)])
        s.add(note_html(f"Morphology model card: calibration ({cal.get('method')}) fitted on "
                        f"{json.dumps(cal.get('fitted_on'))}; reliability on that set."))
        s.add(table_html(["question", "n", "ECE before", "ECE after", "Brier before",
                          "Brier after", "map"], rows))
        s.add(figure_html(reliability_figure(panels, "calibration set: before / after"),
                          "reliability before/after calibration"))
    else:
        s.not_available("model-card reliability diagrams",
                        "no morphology model, or its card has no calibration section")
    groups = [g for g in catalog_groups(table.schema) if not g.list_column]
    if truth is None or not groups:
        s.not_available("survey reliability against truth",
                        "no truth table" if truth is None else "no morphology columns")
        return s
    rows_idx, cols = truth
    need = ["t_class", "edge_on", "spiral_arms", "spin", "bar", "bulge_size", "merger",
            "roundness"]
    if not all(c in cols for c in need):
        s.not_available("survey reliability against truth", "truth has no morphology labels")
        return s
    targets = encode({c: cols[c] for c in need})
    sc = morphology_scores(table.take(rows_idx), targets, groups)
    panels = {q: {st: v["reliability"] for st, v in d.items()}
              for q, d in sc["questions"].items()}
    rows = [[q] + [d.get(st, {}).get("n", "") for st in ("raw",)] +
            [d[st]["ece"] if st in d else "" for st in ("raw", "cal", "post")]
            for q, d in sc["questions"].items()]
    rows.append(["all (count-weighted)", ""] + [sc["ece"].get(st, "") for st in
                                                ("raw", "cal", "post")])
    s.add(note_html("Survey objects matched to truth: top-label ECE (15 bins) on the objects "
                    "each question applies to."))
    s.add(table_html(["question", "n", "ECE raw", "ECE cal", "ECE post"], rows))
    s.add(figure_html(reliability_figure(panels, "survey vs truth: raw / calibrated / "
                                                 "prior-corrected"), "survey reliability"))
    return s


def _photoz(table: Any, config: Mapping[str, Any], truth: Any) -> Section:
    from ..photoz.grid import ZGrid
    from .figures import nz_figure, pit_figure, zz_figure
    from .scores import catalog_groups, nz_distances, photoz_scores

    s = Section("photoz", "Photometric redshifts")
    zg = [g for g in catalog_groups(table.schema) if g.list_column]
    if not zg:
        s.not_available("photo-z", "the catalog has no z_pdf column")
        return s
    g = zg[0]
    grid = ZGrid.from_meta(_meta(table, "tilecat.z_grid"))
    card = _card(config, "photoz")
    cal = (card or {}).get("calibration") or {}
    m = (cal.get("metrics") or {}).get("z")
    if m:
        s.add(note_html(f"Model card: PDF calibration ({cal.get('method')}): PIT KS "
                        f"{m['before']['pit_ks']:.4f} -> {m['after']['pit_ks']:.4f}, CRPS "
                        f"{m['before']['crps']:.4f} -> {m['after']['crps']:.4f} on "
                        f"{json.dumps(cal.get('fitted_on'))}."))
        s.add(figure_html(pit_figure({"before": m.get("pit_hist_before", []),
                                      "after": m.get("pit_hist_after", [])},
                                     "PIT on the calibration set"), "PIT calibration set"))
    else:
        s.not_available("model-card PIT histograms", "the photo-z card has no calibration")
    meta = (_meta(table, "tilecat.priors") or {}).get("groups", {}).get("z")
    curves: dict[str, np.ndarray] = {}
    if meta:
        curves["training N(z) (P_T)"] = np.asarray(meta["train"])
        curves[f"prior used ({meta['source']})"] = np.asarray(meta["used"])
    from ..calibrate.groups import group_values

    for stage in ("raw", "post"):
        if all(c in table.column_names for c in g.columns(stage)):
            curves[f"sum of z_pdf{'' if stage == 'raw' else '_post'}"] = group_values(
                table, g, stage).sum(axis=0)
    if truth is not None and "z_true" in truth[1]:
        rows_idx, cols = truth
        z = np.asarray(cols["z_true"], np.float64)
        ok = np.isfinite(z) & (z > 0)
        sub = table.take(rows_idx)
        if ok.any():
            ps = photoz_scores(sub, z, g, grid, ok)
            nz = nz_distances(sub, z, g, grid, ok)
            curves["truth (matched objects)"] = nz["true"]
            s.add(table_html(["stage", "n", "PIT KS", "CRPS", "N(z) KS (summed PDFs)"],
                             [[st, v["n"], v["pit_ks"], v["crps"], nz.get(st, "")]
                              for st, v in ps.items()]))
            s.add(figure_html(pit_figure({st: v["pit_hist"] for st, v in ps.items()},
                                         "PIT of survey objects vs truth"), "PIT survey"))
            zp = {}
            for name in ("z_mean", "z_mean_post"):
                if name in sub.column_names:
                    zp[name] = np.asarray(sub[name].to_numpy(zero_copy_only=False))[ok]
            s.add(figure_html(zz_figure(z[ok], zp, grid.z_max), "z_phot vs z_true"))
        else:
            s.not_available("z_phot vs z_true", "no matched galaxy with a true redshift")
    else:
        s.not_available("z_phot vs z_true", "no truth table")
    s.add(figure_html(nz_figure(grid.centres, curves, grid.width), "N(z)"))
    return s


def _defects(config: Mapping[str, Any], tiles: list[str], n_tiles: int) -> Section:
    from ..bits import DEFECT_CLASSES, RULE_BITS
    from ..survey import tile_paths
    from .data import read_overlay
    from .figures import overlay_figure, roc_figure

    s = Section("defects", "Defect masks")
    model = (config.get("mask") or {}).get("model")
    card = None
    if model:
        from ..mask.model import resolve_name
        from ..models import load_card

        try:
            card = load_card(resolve_name(model))
        except Exception:  # reported as not available
            card = None
    metrics = ((card or {}).get("metrics") or {}).get("heldout_split_B")
    if metrics:
        s.add(note_html("Masker held-out pixel metrics (model card); thresholds: "
                        + json.dumps(card.get("thresholds"))))
        s.add(table_html(["class", "positive pixels", "AUC", "AP"],
                         [[c, m.get("n_pos"), m.get("auc"), m.get("ap")]
                          for c, m in metrics.items()]))
        s.add(figure_html(roc_figure(metrics), "defect ROC"))
    else:
        s.not_available("defect ROC curves", "no masker configured (mask.model) or its card "
                        "has no metrics")
    shown = 0
    for t in tiles[:n_tiles]:
        store = tile_paths(dict(config), t)["store"]
        try:
            image, mask, what = read_overlay(store)
        except (FileNotFoundError, KeyError):
            continue
        s.add(figure_html(overlay_figure(image, mask, DEFECT_CLASSES + RULE_BITS,
                                         f"tile {t} ({what})"),
                          f"mask overlay {t}"))
        shown += 1
    if not shown:
        s.not_available("mask overlays", "no tile store with image and defect_mask")
    return s


def _marginal(table: Any, q: str, a: str, stage: str) -> np.ndarray | None:
    """P(question path and answer) = product of the answers along the path, or None."""
    from ..morphology.tree import column_name
    from ..priors.tree import MORPHOLOGY_PATHS

    p = None
    for parent, lead in MORPHOLOGY_PATHS[q] + ((q, (a,)),):
        cols = [column_name(parent, x, stage) for x in lead]
        if not all(c in table.column_names for c in cols):
            return None
        v = sum(np.asarray(table[c].to_numpy(zero_copy_only=False), np.float64) for c in cols)
        p = v if p is None else p * v
    return p


def _stamps(config: Mapping[str, Any], table: Any, rows: np.ndarray
            ) -> tuple[list[np.ndarray], list[int], list[str]]:
    """RGB pictures of catalog rows (those with cutouts), their row indices and bands."""
    from ..explain.rgb import lupton_rgb
    from ..survey import tile_paths
    from .data import read_stamps

    tiles = np.asarray(table["tile"].to_pylist(), dtype=object)
    ids = table["object_id"].to_numpy()
    images, kept, bands = [], [], []
    cache: dict[str, tuple[dict[int, np.ndarray], list[str]]] = {}
    for t in sorted(set(tiles[rows])):
        path = tile_paths(dict(config), str(t))["cutouts"]
        if path.exists():
            cache[str(t)] = read_stamps(path, [int(ids[r]) for r in rows if tiles[r] == t])
    for r in rows:
        got = cache.get(str(tiles[r]))
        if got and int(ids[r]) in got[0]:
            images.append(lupton_rgb(got[0][int(ids[r])], got[1]))
            kept.append(int(r))
            bands = got[1]
    return images, kept, bands


def _galleries(table: Any, config: Mapping[str, Any], n: int) -> Section:
    from .figures import gallery_figure

    s = Section("galleries", "Most confident objects per class")
    if n <= 0:
        s.not_available("galleries", "report.gallery is 0")
        return s
    shown = 0
    for q, a in GALLERY_CLASSES:
        stage = next((st for st in ("post", "cal", "raw")
                      if _marginal(table, q, a, st) is not None), None)
        if stage is None:
            continue
        p = _marginal(table, q, a, stage)
        order = np.argsort(-p, kind="stable")[: 4 * n]
        images, kept, _ = _stamps(config, table, order)
        if not images:
            continue
        images, kept = images[:n], kept[:n]
        titles = [f"{int(table['object_id'][r].as_py())}\np={p[r]:.2f}" for r in kept]
        s.add(figure_html(gallery_figure(images, titles, f"{q} = {a} (P from _{stage})"),
                          f"gallery {q} {a}"))
        shown += 1
    if not shown:
        s.not_available("galleries", "no morphology probabilities or no cutouts")
    else:
        s.add(note_html("Colour: Lupton et al. (2004) arcsinh RGB of the cutouts; P is the "
                        "probability of the whole tree path (e.g. featured x not edge-on x arms)."))
    return s


def _outliers(table: Any, config: Mapping[str, Any], n: int) -> Section:
    from .figures import gallery_figure

    s = Section("outliers", "Latent-space outliers")
    if "latent_outlier_score" not in table.column_names:
        s.not_available("latent outliers", "the catalog has no latent_outlier_score (no VAE)")
        return s
    score = np.asarray(table["latent_outlier_score"].to_numpy(zero_copy_only=False), float)
    score = np.where(np.isfinite(score), score, -np.inf)
    order = np.argsort(-score, kind="stable")[: max(n, 0)]
    rows = [[int(table["object_id"][r].as_py()), table["tile"][r].as_py(), float(score[r])]
            for r in order]
    s.add(table_html(["object_id", "tile", "latent_outlier_score"], rows, left=2))
    images, kept, _ = _stamps(config, table, order)
    if images:
        titles = [f"{int(table['object_id'][r].as_py())}\n{score[r]:.1f}" for r in kept]
        s.add(figure_html(gallery_figure(images, titles, "largest latent outlier scores"),
                          "latent outliers"))
    else:
        s.not_available("outlier cutouts", "no cutouts for these objects")
    return s


def run_report(config: Mapping[str, Any]) -> Path:
    """Write ``<results>/report.html`` for the survey of ``config``.

    Parameters
    ----------
    config : dict
        Validated configuration (``report`` section: ``truth``, ``match_radius``,
        ``tiles``, ``gallery``, ``outliers``, ``max_rows``).

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    InputError
        No survey catalog.
    """
    from ..atomic import atomic_path
    from ..tiles import read_manifest
    from .data import match_truth

    results = Path(config["results"])
    rcfg = dict(config.get("report") or {})
    table, total = _read_catalog(results, int(rcfg.get("max_rows", 200000)))
    truth = match_truth(config, table)
    tiles = [t.id for t in read_manifest(config["tiles"])]
    sections = [
        _summary(table, config, None if truth is None else int(len(truth[0])), total,
                 len(tiles)),
        _priors(table),
        _calibration(table, config, truth),
        _photoz(table, config, truth),
        _defects(config, tiles, int(rcfg.get("tiles", 2))),
        _galleries(table, config, int(rcfg.get("gallery", 8))),
        _outliers(table, config, int(rcfg.get("outliers", 12))),
    ]
    page = render_page(f"tilecat QA report: {config['survey']['name']}",
                       f"{total} objects from {len(tiles)} tiles.", sections)
    out = results / "report.html"
    with atomic_path(out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    print(f"QA report -> {out}")
    return out
