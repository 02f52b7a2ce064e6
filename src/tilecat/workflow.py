"""Drive the Snakemake workflow: the whole survey, one tile's rerun, the demo.

Snakemake runs as a subprocess of the same Python environment (its command-line
interface is its stable interface); the repository root holds the Snakefile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .errors import TilecatError
from .tiles import validate_tile_id

__all__ = ["snakemake_cmd", "run_workflow", "rerun_tile", "run_demo", "repo_root"]


def repo_root() -> Path:
    """The directory holding the Snakefile (the source checkout)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "Snakefile").exists() and (parent / "rules").is_dir():
            return parent
    cwd = Path.cwd()
    if (cwd / "Snakefile").exists():
        return cwd
    raise TilecatError("cannot find the tilecat Snakefile (run from the repository)")


def snakemake_cmd(configfile: str | Path, cores: int, extra: list[str] | None = None) -> list[str]:
    """The Snakemake command line for ``configfile``."""
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    return [exe, "--snakefile", str(repo_root() / "Snakefile"), "--configfile", str(configfile),
            "--cores", str(cores), "--printshellcmds", "--show-failed-logs",
            *(extra or [])]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=_env())
    if proc.returncode != 0:
        raise TilecatError(f"snakemake failed (exit {proc.returncode}): {' '.join(cmd)}")


def run_workflow(configfile: str | Path, cores: int = 2, extra: list[str] | None = None) -> None:
    """Run the whole workflow (every tile, then the aggregate)."""
    _run(snakemake_cmd(configfile, cores, extra))


def rerun_tile(configfile: str | Path, tile: str, cores: int = 2,
               extra: list[str] | None = None) -> None:
    """Rebuild exactly one tile's chain (ingest onwards) and the survey aggregate.

    Equivalent to ``snakemake --forcerun <results>/tiles/TILE/tile.zarr/zarr.json``:
    the tile's ingest output is forced, Snakemake reruns what depends on it (that
    tile's mask, detect, infer and catalog, then the aggregate); other tiles'
    files are not touched. In ``workflow.mode: batched`` the tile's batch job is
    forced instead (the batch's tiles are rebuilt, to the same bytes).
    """
    from .config import load_config

    validate_tile_id(tile)
    config = load_config(configfile)
    target = Path(config["results"]) / "tiles" / tile / "tile.zarr" / "zarr.json"
    if config["workflow"]["mode"] == "batched":  # the tile's batch job (whole batch)
        target = _batch_of(config, tile)
    _run(snakemake_cmd(configfile, cores, ["--forcerun", str(target), *(extra or [])]))


def _batch_of(config: dict[str, Any], tile: str) -> Path:
    """Marker of the batch holding ``tile`` (batched mode)."""
    from .batch import batch_id, batch_marker
    from .tiles import read_manifest

    ids = [t.id for t in read_manifest(config["tiles"])]
    if tile not in ids:
        raise TilecatError(f"tile {tile!r} is not in the tile manifest {config['tiles']}")
    return batch_marker(config, batch_id(ids.index(tile) // config["workflow"]["batch_size"]))


def run_demo(cores: int = 2, tiles: int = 4, workdir: str | Path | None = None) -> dict[str, Any]:
    """Simulate the demo survey (if absent), run the workflow and print a summary.

    Returns
    -------
    dict
        Paths of the survey catalog (single file and partitioned) and the report.
    """
    import pyarrow.parquet as pq

    root = Path(workdir) if workdir is not None else repo_root()
    os.chdir(root)
    data = Path("data/demo")
    if not (data / "tiles.tsv").exists():
        print(f"simulating the demo survey ({tiles} tiles) into {data}/ ...", flush=True)
        subprocess.run([sys.executable, "-m", "tilecat.cli", "simulate", "--out", str(data),
                        "--tiles", str(tiles), "--workers", str(cores)],
                       env=_env(), check=True)
    run_workflow("config/config.yaml", cores)
    results = Path("results/demo")
    single = results / "catalog.parquet"
    table = pq.read_table(single)
    report = results / "report.html"
    print()
    print("=" * 72)
    print(f"tilecat demo: {table.num_rows} objects, {table.num_columns} columns, "
          f"{len(set(table['tile'].to_pylist()))} tiles")
    print(f"  survey catalog (one file):   {single.resolve()}")
    print(f"  survey catalog (partitioned): {(results / 'catalog').resolve()}/")
    print(f"  tile stores:                 {(results / 'tiles').resolve()}/<tile>/tile.zarr")
    if report.exists():
        print(f"  QA report:                   {report.resolve()}")
    print("=" * 72)
    return {"catalog": single, "dataset": results / "catalog", "report": report}
