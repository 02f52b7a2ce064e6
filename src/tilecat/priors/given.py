"""Survey priors given in the config (``survey.priors``), checked and put on the classes.

Format::

    survey:
      priors:
        merger: {yes: 0.01, no: 0.99}          # a morphology question: every answer
        edge_on: {yes: 0.3, no: 0.7}
        z: [0.001, 0.004, ...]                 # photo-z N(z): one value per grid bin
        # or  z: {z: [0.0, 0.1, ...], n: [0.0, 1.3, ...]}   N(z) density at redshifts z

Values are normalised (only ratios matter). Unquoted ``yes``/``no`` keys, which YAML
reads as booleans, are taken as the answers "yes"/"no". Questions without an entry are estimated
by EM (or left at the training prior when ``aggregate.estimate_priors`` is false).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["given_priors", "nz_on_grid"]


def nz_on_grid(spec: Any, grid: Any, key: str = "survey.priors.z") -> np.ndarray:
    """An N(z) from the config as probabilities of the bins of ``grid`` (sums to 1).

    Parameters
    ----------
    spec : list or mapping
        ``K`` bin values, or ``{"z": [...], "n": [...]}`` density samples (linear
        between samples, 0 outside them), averaged over each bin.
    grid : tilecat.photoz.grid.ZGrid

    Raises
    ------
    ConfigError
        Wrong length, negative or non-finite values, or no weight on the grid.
    """
    if isinstance(spec, Mapping):
        try:
            z = np.asarray(spec["z"], np.float64)
            n = np.asarray(spec["n"], np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"key '{key}': expected {{z: [...], n: [...]}}: {exc}") from exc
        if z.ndim != 1 or z.shape != n.shape or z.size < 2 or np.any(np.diff(z) <= 0):
            raise ConfigError(f"key '{key}': z must increase and match n in length")
        sub = 32
        k = int(grid.n_bins)
        fine = grid.z_min + (np.arange(k * sub) + 0.5) * grid.width / sub
        p = np.interp(fine, z, n, left=0.0, right=0.0).reshape(k, sub).mean(axis=1)
    else:
        try:
            p = np.asarray(spec, np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"key '{key}': not a list of numbers: {exc}") from exc
        if p.shape != (int(grid.n_bins),):
            raise ConfigError(f"key '{key}': {p.size} values for the model's "
                              f"{grid.n_bins} redshift bins")
    if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ConfigError(f"key '{key}': values must be finite, >= 0 and not all 0")
    return p / p.sum()


def given_priors(spec: Mapping[str, Any] | None, groups: Sequence[Any], grid: Any = None
                 ) -> dict[str, np.ndarray]:
    """Check ``survey.priors`` against the catalog's probability groups.

    Parameters
    ----------
    spec : mapping or None
        ``survey.priors``.
    groups : sequence of ProbGroup
        The groups present (:func:`tilecat.calibrate.groups.card_groups`).
    grid : ZGrid, optional
        The photo-z grid (needed for a ``z`` entry when photo-z is present).

    Returns
    -------
    dict
        Group name -> normalised prior, for the groups the config gives.

    Raises
    ------
    ConfigError
        Unknown question or answer, missing answers, bad values. Entries for a model
        that is not in the catalog are ignored.
    """
    from ..morphology.tree import QUESTIONS

    known = {q.name: q.answers for q in QUESTIONS}
    present = {g.name: g for g in groups}
    out: dict[str, np.ndarray] = {}
    for name, value in (spec or {}).items():
        key = f"survey.priors.{name}"
        if name == "z":
            if "z" in present:
                out["z"] = nz_on_grid(value, grid, key)
            continue
        if name not in known:
            raise ConfigError(f"key '{key}': unknown question {name!r}; known: "
                              f"{sorted(known) + ['z']}")
        if not isinstance(value, Mapping):
            raise ConfigError(f"key '{key}': expected {{answer: probability}}")
        # YAML 1.1 reads unquoted yes/no as booleans
        value = {({True: "yes", False: "no"}[a] if isinstance(a, bool) else str(a)): v
                 for a, v in value.items()}
        answers = known[name]
        extra = sorted(set(value) - set(answers))
        missing = [a for a in answers if a not in value]
        if extra or missing:
            raise ConfigError(f"key '{key}': answers must be exactly {list(answers)} "
                              f"(unknown {extra}, missing {missing})")
        try:
            p = np.array([float(value[a]) for a in answers])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"key '{key}': probabilities must be numbers: {exc}") from exc
        if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
            raise ConfigError(f"key '{key}': probabilities must be >= 0 and not all 0")
        if name in present:
            pt = present[name].prior_train
            bad = [a for a, v, t in zip(answers, p, pt) if v > 0 and t <= 0]
            if bad:
                raise ConfigError(f"key '{key}': answers {bad} never occur in the model's "
                                  "training set, their prior cannot be corrected")
            out[name] = p / p.sum()
    return out
