"""Command-line entry points of the simulator (called by :mod:`tilecat.cli`)."""

from __future__ import annotations

import argparse

__all__ = ["simulate_main", "simulate_stamps_main"]


def simulate_main(args: argparse.Namespace) -> None:
    """``tilecat simulate --out DIR [--config YAML] [--tiles N] [--seed S] [--only T]
    [--workers N]``: simulate a survey (see :mod:`tilecat.simulate.survey`)."""
    from ..errors import ConfigError
    from .config import load_sim_config
    from .survey import simulate_survey

    overrides = {}
    if getattr(args, "tiles", None) is not None:
        overrides["tiles"] = args.tiles
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    cfg = load_sim_config(args.config, overrides=overrides)
    workers = int(getattr(args, "workers", 1) or 1)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    done = simulate_survey(cfg, args.out, only=getattr(args, "only", None), workers=workers,
                           progress=True)
    print(f"wrote {len(done)} tile(s) to {args.out}")


def simulate_stamps_main(args: argparse.Namespace) -> None:
    """``tilecat simulate-stamps --out STORE [--kind galaxy|defect] [--config YAML] [-n N]
    [--seed S] [--heldout] [--workers N]``: write a training set as Zarr v3 (atomic)."""
    from ..errors import ConfigError
    from .config import load_sim_config

    cfg = load_sim_config(args.config)
    workers = int(getattr(args, "workers", 1) or 1)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    n = int(args.number)
    if n < 1:
        raise ConfigError(f"--number must be >= 1, got {n}")
    if args.kind == "galaxy":
        from .stamps import make_galaxy_stamps

        path = make_galaxy_stamps(cfg, args.out, n, int(args.seed), heldout=bool(args.heldout),
                                  workers=workers, progress=True)
    elif args.kind == "defect":
        from .patches import make_defect_patches

        path = make_defect_patches(cfg, args.out, n, int(args.seed),
                                   heldout=bool(args.heldout), workers=workers, progress=True)
    else:
        raise ConfigError(f"--kind must be 'galaxy' or 'defect', got {args.kind!r}")
    print(f"wrote {n} {args.kind} {'stamps' if args.kind == 'galaxy' else 'patches'} to {path}")
