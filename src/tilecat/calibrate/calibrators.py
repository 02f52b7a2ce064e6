"""Calibration maps of probability vectors, stored in model cards as JSON.

Each calibrator maps ``(N, K)`` probabilities (rows summing to 1) to calibrated ones
and round-trips through a small dict (``to_dict`` / :func:`from_dict`):

``identity``
    No change (a model without calibration parameters).
``temperature``
    Temperature scaling (Guo et al. 2017) on the log-probabilities, which are the
    logits up to a per-row constant: ``q_c ∝ p_c^(1/T)``. ``T > 1`` softens.
``bcts``
    Bias-corrected temperature scaling (Alexandari et al. 2020): ``q_c ∝ p_c^(1/T) e^b_c``,
    which also removes class-wise biases (the recommended map before EM).
``isotonic``
    One-vs-rest isotonic regression per class (Zadrozny & Elkan 2002), piecewise
    linear between the fitted thresholds, then rows renormalised.
``pit``
    For binned PDFs: the recalibrated CDF is ``G(F(z))`` with ``G`` the CDF of the
    PIT values on the calibration set (Bordoloi et al. 2010), so that PIT becomes
    uniform; evaluated at the bin edges (piecewise linear ``G``).
``chain``
    Maps applied in turn (``steps``), e.g. ``bcts`` then ``pit`` for binned PDFs: BCTS
    fitted by likelihood with the redshift bins as classes makes the PDFs calibrated
    posteriors (their mean follows N(z), which EM needs), and the PIT map fitted
    after it removes the remaining marginal (PIT) miscalibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["Calibrator", "Identity", "Temperature", "BiasTemperature", "Isotonic", "PitMap",
           "Chain", "from_dict",
           "normalise_rows", "KINDS"]


def normalise_rows(p: np.ndarray) -> np.ndarray:
    """Non-negative float64 rows summing to 1 (NaN -> 0; an all-zero row becomes uniform)."""
    p = np.clip(np.nan_to_num(np.asarray(p, dtype=np.float64), nan=0.0), 0.0, None)
    s = p.sum(axis=-1, keepdims=True)
    k = p.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, p / s, 1.0 / k)


class Calibrator(Protocol):
    """What every calibration map provides."""

    kind: str

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, float64 ``(N, K)``."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-able parameters (with ``kind``)."""
        ...


@dataclass(frozen=True)
class Identity:
    """No calibration."""

    kind: str = "identity"

    def apply(self, p: np.ndarray) -> np.ndarray:
        return normalise_rows(p)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


@dataclass(frozen=True)
class Temperature:
    """Temperature scaling ``q ∝ p^(1/T)`` (softmax of the log-probabilities / T)."""

    temperature: float
    kind: str = "temperature"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = normalise_rows(p)
        with np.errstate(divide="ignore"):
            logp = np.log(p)
        top = logp.max(axis=-1, keepdims=True)
        q = np.exp((logp - top) / float(self.temperature))
        return q / q.sum(axis=-1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "temperature": float(self.temperature)}


@dataclass(frozen=True)
class BiasTemperature:
    """Bias-corrected temperature scaling (BCTS): ``q_c ∝ p_c^(1/T) exp(b_c)``.

    Temperature scaling fixes over- or under-confidence but not a class-wise bias;
    the extra per-class offsets ``b`` (``b_0 = 0``) do. At the NLL optimum the mean
    calibrated probability of each class equals its frequency in the calibration
    set, which is what EM prior estimation needs (Alexandari et al. 2020, ICML).
    """

    temperature: float
    bias: tuple[float, ...]
    kind: str = "bcts"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = normalise_rows(p)
        if p.shape[-1] != len(self.bias):
            raise ValueError(f"BCTS calibrator for {len(self.bias)} classes got {p.shape[-1]}")
        with np.errstate(divide="ignore"):
            z = np.log(p) / float(self.temperature) + np.asarray(self.bias, np.float64)
        z -= z.max(axis=-1, keepdims=True)
        q = np.exp(z)
        return q / q.sum(axis=-1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "temperature": float(self.temperature),
                "bias": [float(b) for b in self.bias]}


@dataclass(frozen=True)
class Isotonic:
    """Per-class isotonic maps: ``x[c]``, ``y[c]`` thresholds (increasing), linear between."""

    x: tuple[tuple[float, ...], ...]
    y: tuple[tuple[float, ...], ...]
    kind: str = "isotonic"

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = normalise_rows(p)
        if p.shape[-1] != len(self.x):
            raise ValueError(f"isotonic calibrator for {len(self.x)} classes got {p.shape[-1]}")
        q = np.stack([np.interp(p[:, c], self.x[c], self.y[c]) for c in range(p.shape[-1])],
                     axis=1)
        return normalise_rows(q)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "x": [list(v) for v in self.x], "y": [list(v) for v in self.y]}


@dataclass(frozen=True)
class PitMap:
    """PDF recalibration through the PIT CDF ``G`` (knots ``u`` -> ``g``, both from 0 to 1)."""

    u: tuple[float, ...]
    g: tuple[float, ...]
    kind: str = "pit"

    def __post_init__(self) -> None:
        u, g = np.asarray(self.u), np.asarray(self.g)
        if u.shape != g.shape or u.size < 2 or np.any(np.diff(u) <= 0) or np.any(np.diff(g) < 0):
            raise ValueError("PIT map knots must be increasing")

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = normalise_rows(p)
        cum = np.concatenate([np.zeros(p.shape[:-1] + (1,)), np.cumsum(p, axis=-1)], axis=-1)
        cum = np.clip(cum / cum[..., -1:], 0.0, 1.0)
        mapped = np.interp(cum, self.u, self.g)
        return normalise_rows(np.diff(mapped, axis=-1))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "u": list(self.u), "g": list(self.g)}


@dataclass(frozen=True)
class Chain:
    """Calibration maps applied in order (``steps[0]`` first)."""

    steps: tuple[Any, ...]
    kind: str = "chain"

    def apply(self, p: np.ndarray) -> np.ndarray:
        q = normalise_rows(p)
        for step in self.steps:
            q = step.apply(q)
        return q

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "steps": [s.to_dict() for s in self.steps]}


#: calibrator kinds known to :func:`from_dict`
KINDS: tuple[str, ...] = ("identity", "temperature", "bcts", "isotonic", "pit", "chain")


def from_dict(d: dict[str, Any] | None) -> Calibrator:
    """Rebuild a calibrator from its card entry (None -> :class:`Identity`).

    Raises
    ------
    ValueError
        Unknown kind or malformed parameters.
    """
    if not d:
        return Identity()
    kind = d.get("kind")
    try:
        if kind == "identity":
            return Identity()
        if kind == "temperature":
            return Temperature(float(d["temperature"]))
        if kind == "bcts":
            return BiasTemperature(float(d["temperature"]), tuple(map(float, d["bias"])))
        if kind == "isotonic":
            return Isotonic(tuple(tuple(map(float, v)) for v in d["x"]),
                            tuple(tuple(map(float, v)) for v in d["y"]))
        if kind == "pit":
            return PitMap(tuple(map(float, d["u"])), tuple(map(float, d["g"])))
        if kind == "chain":
            steps = tuple(from_dict(s) for s in d["steps"])
            if not steps or any(s.kind == "chain" for s in steps):
                raise ValueError("a chain needs one or more steps, none of them a chain")
            return Chain(steps)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"calibration entry {d!r} is malformed: {exc}") from exc
    raise ValueError(f"unknown calibration kind {kind!r}; known: {list(KINDS)}")
