"""Survey simulator: GalSim-rendered multi-band tiles with truth (DESIGN.md §6).

``tilecat simulate --out DIR`` writes a survey in the on-disk form of a real one
(FITS per tile and band, tiles.tsv, survey.yaml) plus truth Parquet and defect masks.
Modules: config (settings), photometry (bandpasses, SEDs, K-corrections), population
(what galaxies), galaxies (GalSim profiles), stars, conditions (PSF, sky, noise), tile
(render one tile), writer (files), survey (many tiles), defects and stamps (training sets).
"""

from __future__ import annotations

__all__ = ["load_sim_config", "render_tile", "simulate_survey", "write_tile"]


def __getattr__(name: str):  # lazy: importing the package must not import GalSim
    if name == "load_sim_config":
        from .config import load_sim_config

        return load_sim_config
    if name == "render_tile":
        from .tile import render_tile

        return render_tile
    if name == "simulate_survey":
        from .survey import simulate_survey

        return simulate_survey
    if name == "write_tile":
        from .writer import write_tile

        return write_tile
    raise AttributeError(name)
