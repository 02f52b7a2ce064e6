"""Command-line interface: ``tilecat <stage> ...``.

Every stage of the workflow runs alone from here (and Snakemake's rules call these
same commands). Imports are lazy so that a job's start-up stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEFAULT_CONFIG = "config/config.yaml"


def _config(args: argparse.Namespace) -> dict[str, Any]:
    from .config import load_config

    return load_config(args.config)


def _tile_index(config: dict[str, Any], tile: str, given: int | None) -> int:
    from .errors import ConfigError
    from .tiles import read_manifest, validate_tile_id

    validate_tile_id(tile)
    if given is not None:
        return given
    for t in read_manifest(config["tiles"]):
        if t.id == tile:
            return t.index
    raise ConfigError(f"tile {tile!r} is not in the tile manifest {config['tiles']}")


def _cmd_ingest(args: argparse.Namespace) -> None:
    from .ingest import run_ingest

    config = _config(args)
    _tile_index(config, args.tile, args.index)
    run_ingest(config, args.tile)


def _cmd_mask(args: argparse.Namespace) -> None:
    from .mask import run_mask

    config = _config(args)
    run_mask(config, args.tile)


def _cmd_detect(args: argparse.Namespace) -> None:
    from .detect import run_detect

    config = _config(args)
    run_detect(config, args.tile, _tile_index(config, args.tile, args.index))


def _cmd_infer(args: argparse.Namespace) -> None:
    from .infer import run_infer

    run_infer(_config(args), args.tile)


def _cmd_explain(args: argparse.Namespace) -> None:
    from .explain import explain

    out = args.out or f"explain-{args.object_id}-{args.head}-{args.answer}.png"
    explain(_config(args), args.tile, args.object_id, args.head, args.answer, out)
    print(out)


def _cmd_similar(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .latent import similar

    catalog = args.catalog or str(Path(_config(args)["results"]) / "catalog.parquet")
    table = similar(catalog, args.object_id, k=args.k)
    cols = [c for c in table.column_names if c != "latent"]
    print("\t".join(cols))
    for row in table.select(cols).to_pylist():
        print("\t".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))


def _cmd_catalog(args: argparse.Namespace) -> None:
    from .catalog import run_catalog

    config = _config(args)
    run_catalog(config, args.tile)


def _cmd_aggregate(args: argparse.Namespace) -> None:
    from .aggregate import run_aggregate

    run_aggregate(_config(args))


def _cmd_report(args: argparse.Namespace) -> None:
    from .qa import run_report

    run_report(_config(args))


def _cmd_calibrate(args: argparse.Namespace) -> None:
    from .calibrate import run_calibrate

    run_calibrate(args.model, args.data, method=args.method, pdf_method=args.pdf_method,
                  out=args.out, limit=args.limit, batch_size=args.batch_size,
                  check=args.check)


def _cmd_simulate(args: argparse.Namespace) -> None:
    from .simulate.cli import simulate_main

    simulate_main(args)


def _cmd_simulate_stamps(args: argparse.Namespace) -> None:
    from .simulate.cli import simulate_stamps_main

    simulate_stamps_main(args)


def _cmd_train(args: argparse.Namespace) -> None:
    from .train import run_training

    out = args.out or str(Path("results") / "models" / args.model)
    run_training(args.model, args.recipe, args.work, out, threads=args.threads,
                 workers=args.workers, scale=args.scale)
    print(out)


def _cmd_rerun(args: argparse.Namespace) -> None:
    from .workflow import rerun_tile

    rerun_tile(args.config, args.tile, cores=args.cores, extra=args.snakemake_args)


def _cmd_run(args: argparse.Namespace) -> None:
    from .workflow import run_workflow

    run_workflow(args.config, cores=args.cores, extra=args.snakemake_args)


def _cmd_demo(args: argparse.Namespace) -> None:
    from .workflow import run_demo

    run_demo(cores=args.cores, tiles=args.tiles)


def _cmd_run_batch(args: argparse.Namespace) -> None:
    from .batch import run_batch

    run_batch(_config(args), args.batch)


def _parse_excludes(items: list[str]) -> dict[str, str]:
    from .tiles import validate_tile_id

    out: dict[str, str] = {}
    for item in items or []:
        tile, _, reason = item.partition("=")
        out[validate_tile_id(tile.strip())] = reason.strip()
    return out


def _cmd_release(args: argparse.Namespace) -> None:
    from .release import build_release

    config = _config(args)
    if args.out is not None:
        config.setdefault("release", {})["dir"] = args.out
    version = args.version or (config.get("release") or {}).get("version")
    if not version:
        from .errors import ConfigError

        raise ConfigError("no release version: give --version V (or release.version)")
    build_release(config, version, exclude=_parse_excludes(args.exclude), force=args.force,
                  configfile=args.config)


def _cmd_verify(args: argparse.Namespace) -> None:
    from .errors import TilecatError
    from .release import verify_release

    report = verify_release(args.release, inputs=not args.skip_inputs, workers=args.workers)
    for note in report.notes:
        print(f"note: {note}")
    for m in report.mismatches:
        print(f"MISMATCH {m}")
    if not report.ok:
        raise TilecatError(f"release {args.release}: {len(report.mismatches)} mismatch(es) "
                           f"among {report.checked} files")
    print(f"release {args.release}: OK, {report.checked} files match the manifest")


def _add_stage(sub: Any, name: str, func: Callable[[argparse.Namespace], None], help: str,
               tile: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    if tile:
        p.add_argument("tile", metavar="TILE", help="tile id")
        p.add_argument("--index", type=int, default=None,
                       help="tile index for object ids (default: from the manifest)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config YAML (default: %(default)s)")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tilecat``."""
    parser = argparse.ArgumentParser(prog="tilecat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stage(sub, "ingest", _cmd_ingest, "FITS per band -> tile.zarr (Dask)")
    _add_stage(sub, "mask", _cmd_mask, "per-pixel defect probabilities and bits")
    _add_stage(sub, "detect", _cmd_detect, "background, detection, photometry, cutouts")
    _add_stage(sub, "infer", _cmd_infer, "galaxy models over the tile's cutouts")
    _add_stage(sub, "catalog", _cmd_catalog, "the tile's Parquet catalog")
    _add_stage(sub, "aggregate", _cmd_aggregate, "survey catalog from all tiles", tile=False)
    _add_stage(sub, "report", _cmd_report, "QA report of the survey catalog (HTML)", tile=False)

    p = sub.add_parser("calibrate", help="refit a model's calibration on a labelled set")
    p.add_argument("model", metavar="MODEL", help="model directory or shipped model name")
    p.add_argument("--data", required=True,
                   help="labelled set: Parquet of raw outputs + truth, or a galaxy stamp set")
    p.add_argument("--method", choices=["bcts", "temperature", "isotonic", "identity"],
                   default="bcts", help="map of class probabilities (default: %(default)s)")
    p.add_argument("--pdf-method", choices=["bcts+pit", "pit", "temperature", "identity"],
                   default="bcts+pit", help="map of photo-z PDFs (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="write the recalibrated model here (default: update the card in place)")
    p.add_argument("--limit", type=int, default=None, help="use the first N labelled objects")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--check", default=None,
                   help="labelled set in other observing conditions: EM transfer test "
                        "(EM is used in the aggregate only where it passes)")
    p.set_defaults(func=_cmd_calibrate)

    p = _add_stage(sub, "rerun", _cmd_rerun, "rebuild one tile's chain and the aggregate")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("snakemake_args", nargs="*", help="extra Snakemake arguments (after --)")
    p = _add_stage(sub, "run", _cmd_run, "run the whole workflow with Snakemake", tile=False)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("snakemake_args", nargs="*", help="extra Snakemake arguments (after --)")

    p = sub.add_parser("run-batch", help="a batch of tiles through their whole chain "
                       "(workflow.mode: batched)")
    p.add_argument("batch", metavar="BATCH", help="batch id, e.g. b000000")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config YAML (default: %(default)s)")
    p.set_defaults(func=_cmd_run_batch)

    p = sub.add_parser("release", help="build release/V/: catalog (Parquet + HATS), QA "
                       "report, manifest.json with checksums")
    p.add_argument("--version", default=None, help="release version (default release.version)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config YAML (default: %(default)s)")
    p.add_argument("--exclude", action="append", default=[], metavar="TILE[=REASON]",
                   help="leave a tile out (repeatable); the manifest records it and why")
    p.add_argument("--out", default=None,
                   help="directory holding release versions (default release.dir, "
                        "else <results>/release)")
    p.add_argument("--force", action="store_true", help="replace an existing release")
    p.set_defaults(func=_cmd_release)

    p = sub.add_parser("verify", help="re-hash a release against its manifest")
    p.add_argument("release", metavar="RELEASE_DIR", help="e.g. results/demo/release/v1")
    p.add_argument("--skip-inputs", action="store_true",
                   help="do not re-hash the input files (e.g. a release copied elsewhere)")
    p.add_argument("--workers", type=int, default=2, help="hashing threads")
    p.set_defaults(func=_cmd_verify)

    p = _add_stage(sub, "explain", _cmd_explain,
                   "Grad-CAM map of one model answer for one object (PNG)")
    p.add_argument("object_id", type=int, metavar="OBJECT_ID")
    p.add_argument("--head", default="morphology", help="model head (default: %(default)s)")
    p.add_argument("--answer", default="t_featured",
                   help="output to explain, e.g. t_featured, spin_S (default: %(default)s)")
    p.add_argument("--out", default=None, help="PNG path")

    p = sub.add_parser("similar", help="nearest neighbours in latent space across the survey")
    p.add_argument("object_id", type=int, metavar="OBJECT_ID")
    p.add_argument("-k", type=int, default=10, help="neighbours, the object included")
    p.add_argument("--catalog", default=None, help="survey catalog (default: from --config)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=_cmd_similar)

    p = sub.add_parser("demo", help="simulate the demo survey and run the whole workflow")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--tiles", type=int, default=4)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("simulate", help="simulate a survey (FITS per tile and band + truth)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", default=None, help="simulation YAML (default: the demo survey)")
    p.add_argument("--tiles", type=int, default=None, help="number of tiles")
    p.add_argument("--seed", type=int, default=None, help="survey seed")
    p.add_argument("--only", default=None, help="simulate only this tile id")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("simulate-stamps", help="postage-stamp / defect-patch training sets")
    p.add_argument("--out", required=True, help="output Zarr store")
    p.add_argument("--kind", choices=["galaxy", "defect"], default="galaxy")
    p.add_argument("--config", default=None, help="simulation YAML (default: the demo survey)")
    p.add_argument("-n", "--number", type=int, default=1000, help="number of stamps/patches")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--heldout", action="store_true",
                   help="held-out conditions (other PSF/depth ranges)")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.set_defaults(func=_cmd_simulate_stamps)

    p = sub.add_parser("train", help="train a model as config/train.yaml says (simulates "
                       "missing training sets)")
    p.add_argument("model", metavar="MODEL",
                   help="masker, morphology, structure, photoz or vae")
    p.add_argument("--recipe", default="config/train.yaml",
                   help="training recipe YAML (default: %(default)s)")
    p.add_argument("--work", default="data/train",
                   help="simulated sets and intermediate stages (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="model directory to write (default: results/models/MODEL; the "
                        "shipped models are replaced only if this points at them)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; the shipped models used 1 (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="simulation processes")
    p.add_argument("--scale", type=float, default=1.0,
                   help="smoke run: shrink set sizes and epochs by this factor in (0, 1]; "
                        "the card then says smoke_run (default: %(default)s)")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tilecat`` console script."""
    from .errors import TilecatError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except TilecatError as exc:
        print(f"tilecat {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
