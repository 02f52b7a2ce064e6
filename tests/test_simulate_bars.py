"""Tests of the simulator's bar models (``population.bar_model``: faint | visible).

``faint`` (the default) must reproduce the galaxies and stamps of the code before the
key existed draw for draw: the checksums below were computed with that code (simulator
1.1 before the bar model was added) and must not change. ``visible`` bars carry 7-30 %
of the light and the spiral arms leave the bar ends.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest

galsim = pytest.importorskip("galsim")

from tilecat.errors import ConfigError  # noqa: E402
from tilecat.simulate import galaxies as gal  # noqa: E402
from tilecat.simulate.config import OPTIONAL, load_sim_config  # noqa: E402
from tilecat.simulate.galaxies import bar_end_radius, build_galaxy, spiral_arm_knots  # noqa: E402
from tilecat.simulate.population import (  # noqa: E402
    BAR_END,
    bar_model,
    draw_galaxies,
    labels,
    part_fluxes,
)
from tilecat.simulate.stamps import class_plan, render_stamp_chunk, stamp_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MORPH = ROOT / "config" / "stamps" / "morphology.yaml"
MORPH_BARS = ROOT / "config" / "stamps" / "morphology-bars.yaml"

#: Spec fields hashed by :func:`_spec_digest` (everything the renderer reads).
_FIELDS = ("kind", "redshift", "flux", "parts", "r50_disk", "r50_bulge", "n_bulge", "n_disk",
           "inclination", "q", "bulge_q", "phi", "spin", "pitch", "bar", "bar_length", "bar_q",
           "bar_angle", "n_knots", "seed", "separation", "sep_angle", "tidal_g")
#: Checksums computed with the code before ``bar_model`` existed (see the module docstring).
OLD_SPEC_DIGEST = {"empirical": "14dee902ee8163a2", "parametric": "5b4ac90b1ce1ecdd"}
OLD_KNOTS_DIGEST = "97376bd4862808f2"
#: per-stamp sum and sum of squares of the 21 32x32 4-band stamps of
#: ``render_stamp_chunk(morphology.yaml, seed 5)`` made by the simulator before
#: ``bar_model`` existed (c818d23^); moments, not a digest of the pixels, so that the
#: last-bit FFT differences of another numpy build do not matter
OLD_STAMP_SUMS = np.array([12750.1, 16095.1, 7419.24, 24794.6, 22659.1, 17879.8, 18643.8,
                           25372.4, 6677.15, 15319.7, 22888.7, 257.546, 10692, 3941.34,
                           5092.41, 776.349, 22842.7, 25966, 7778.75, 21062.7, 19366])
OLD_STAMP_SUMSQ = np.array([45132, 84190, 21746.3, 155695, 127125, 81724.9, 99394.4,
                            160402, 16319.5, 65372.9, 129132, 2761.77, 40712, 8333.58,
                            12754.2, 4040.33, 131014, 169026, 22495.9, 118612, 94314.2])


def _fmt(v) -> str:
    """Canonical text of a spec value (floats to 7 significant digits)."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (tuple, list, np.ndarray)):
        return "[" + ",".join(_fmt(x) for x in np.asarray(v, dtype=object).ravel()) + "]"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6e}"
    return str(v)


def _spec_digest(specs) -> str:
    h = hashlib.sha256()
    for s in specs:
        for f in _FIELDS:
            h.update(f"{f}={_fmt(getattr(s, f))};".encode())
        if s.companion is not None:
            for f in _FIELDS:
                h.update(f"c.{f}={_fmt(getattr(s.companion, f))};".encode())
        h.update(_fmt(labels(s)).encode())
    return h.hexdigest()[:16]


def _cfg(kind: str = "empirical", model: str | None = None) -> dict:
    """Stamp settings (bar_fraction 0.5, equal kind weights) of the demo survey."""
    pop: dict = {"kind": kind}
    if model is not None:
        pop["bar_model"] = model
    return stamp_config(load_sim_config(None, overrides={"population": pop}))


def _draw(kind: str = "empirical", model: str | None = None, n: int = 300, seed: int = 2024):
    return draw_galaxies(n, np.random.default_rng(seed), _cfg(kind, model))


# ------------------------------------------------------------------------- settings
def test_bar_model_is_optional_and_validated():
    # absent from the merged defaults: merged settings (and cache tags) of old YAMLs unchanged
    assert "bar_model" not in load_sim_config(MORPH)["population"]
    assert OPTIONAL[("population", "bar_model")] == "faint"
    assert bar_model(load_sim_config(None)) == "faint"
    cfg = load_sim_config(None, overrides={"population": {"bar_model": "visible"}})
    assert bar_model(cfg) == "visible"
    with pytest.raises(ConfigError, match="population.bar_model"):
        load_sim_config(None, overrides={"population": {"bar_model": "loud"}})
    with pytest.raises(ConfigError, match="bar_model"):  # the known keys name it
        load_sim_config(None, overrides={"population": {"bar_modl": "visible"}})


def test_morphology_bars_config_is_morphology_plus_visible_bars():
    old = load_sim_config(MORPH)
    new = load_sim_config(MORPH_BARS)
    assert new["population"].pop("bar_model") == "visible"
    assert new == old


# ------------------------------------------------------------------------- faint = old
@pytest.mark.parametrize("kind", ["empirical", "parametric"])
def test_faint_reproduces_old_population(kind):
    specs = _draw(kind)
    assert _spec_digest(specs) == OLD_SPEC_DIGEST[kind]
    assert _spec_digest(_draw(kind, "faint")) == OLD_SPEC_DIGEST[kind]  # explicit = absent
    barred = [s for s in specs if s.bar != "none"]
    assert barred and {s.kind for s in barred} == {"spiral"}
    for s in specs:
        assert not s.arms_from_bar
    for s in barred:  # the old rules
        fb = s.parts["bar"][1]
        lo, hi = (0.08, 0.15) if s.bar == "strong" else (0.03, 0.06)
        assert fb <= hi + 1e-12 and (fb >= lo - 1e-12 or fb == pytest.approx(
            0.5 * (s.parts["disk"][1] + fb)))
        assert 0.6 <= s.bar_length / s.r50_disk <= 1.0


def test_faint_reproduces_old_arm_knots():
    k = spiral_arm_knots(2.0, 20.0, np.random.default_rng(0), per_arm=40)
    assert hashlib.sha256(_fmt(k).encode()).hexdigest()[:16] == OLD_KNOTS_DIGEST


def test_faint_reproduces_old_stamps():
    cfg = stamp_config(load_sim_config(MORPH))
    classes, spins = class_plan(21, 5)
    res = render_stamp_chunk(cfg, 5, 0, classes, spins, size=32)
    assert {"strong", "weak"} <= set(res["bar"])  # barred spirals are among them
    s = res["stamps"].astype(np.float64)
    np.testing.assert_allclose(s.sum(axis=(1, 2, 3)), OLD_STAMP_SUMS, rtol=1e-4)
    np.testing.assert_allclose((s**2).sum(axis=(1, 2, 3)), OLD_STAMP_SUMSQ, rtol=1e-4)


# ------------------------------------------------------------------------- visible bars
@pytest.mark.parametrize("kind", ["empirical", "parametric"])
def test_visible_bar_light_and_size(kind):
    specs = _draw(kind, "visible", n=400)
    spirals = [s for s in specs if s.kind == "spiral"]
    barred = [s for s in spirals if s.bar != "none"]
    assert 0.3 < len(barred) / len(spirals) < 0.7  # bar_fraction 0.5 in stamp settings
    assert {s.bar for s in barred} == {"strong", "weak"}
    for s in specs:
        assert sum(f for _, f in s.parts.values()) == pytest.approx(1.0)
        assert ("bar" in s.parts) == (s.bar != "none")
    for s in barred:
        fb = s.parts["bar"][1]
        lo, hi = (0.15, 0.30) if s.bar == "strong" else (0.07, 0.12)
        assert lo <= fb <= hi
        # the reference-band (r) flux of the bar part is that fraction of the total
        r = part_fluxes(s)["bar"][2] / s.flux[2]
        assert r == pytest.approx(fb, rel=1e-9)
        # half-light semi-major axis within 0.3-0.9 r50_disk and beyond the bulge
        assert 0.3 - 1e-9 <= s.bar_length / s.r50_disk <= 0.9 + 1e-9
        assert s.bar_length >= min(1.3 * s.r50_bulge, 0.9 * s.r50_disk) - 1e-9
        assert s.arms_from_bar
        # arms keep their 35-55 % share of the non-bulge, non-bar light
        rest = 1.0 - s.bulge_to_total - fb
        assert 0.35 - 1e-9 <= s.parts["arms"][1] / rest <= 0.55 + 1e-9


def test_visible_lenticular_bars_and_labels():
    specs = _draw("parametric", "visible", n=600)
    s0 = [s for s in specs if s.kind == "lenticular"]
    s0_barred = [s for s in s0 if s.bar != "none"]
    # 0.6 x bar_fraction (0.5) = 0.3 of the lenticulars
    assert 0.12 < len(s0_barred) / len(s0) < 0.5
    for s in s0_barred:
        fb = s.parts["bar"][1]
        lo, hi = (0.15, 0.30) if s.bar == "strong" else (0.07, 0.12)
        assert lo <= fb <= hi
        assert "arms" not in s.parts and not s.arms_from_bar
    mergers = [s for s in specs if s.kind == "merger"]
    assert mergers
    for m in mergers:  # merger members stay unbarred (their label is bar = none)
        for member in (m, m.companion):
            assert member.bar == "none" and "bar" not in member.parts
    for s in specs:  # labels say what is drawn
        lab = labels(s)
        assert lab["bar"] == (s.bar if s.kind in ("spiral", "lenticular") else "none")
        assert lab["bar"] == ("none" if "bar" not in s.parts else s.bar)
        assert lab["spiral_arms"] == (s.kind == "spiral")
        assert lab["t_class"] == ("smooth" if s.kind == "elliptical" else "featured")


def test_faint_labels_unchanged_in_meaning():
    for s in _draw("parametric"):
        lab = labels(s)
        assert lab["bar"] == (s.bar if s.kind == "spiral" else "none")
        if s.kind == "lenticular":
            assert lab["bar"] == "none"


def _barred_visible_spiral():
    for s in _draw("parametric", "visible", n=200, seed=7):
        if s.kind == "spiral" and s.bar == "strong":
            return s
    raise AssertionError("no strong-barred spiral drawn")  # pragma: no cover


def test_arms_start_at_bar_ends(monkeypatch):
    spec = _barred_visible_spiral()
    calls = []
    real = gal.spiral_arm_knots

    def spy(*args, **kw):
        out = real(*args, **kw)
        calls.append((kw, out))
        return out

    monkeypatch.setattr(gal, "spiral_arm_knots", spy)
    build_galaxy(spec)
    (kw, knots), = calls
    r_end = bar_end_radius(spec)
    assert r_end == pytest.approx(BAR_END * spec.bar_length)
    assert kw["r_in"] == pytest.approx(r_end)
    assert kw["theta0"] == pytest.approx(np.radians(spec.bar_angle))
    h = spec.r50_disk / 1.678
    r_in = float(np.clip(r_end, 0.5 * h, 2.1 * h))
    b = np.tan(np.radians(spec.pitch))
    for k, arm in enumerate(np.split(knots, 2)):
        # each arm starts at one bar end (disk plane, Z frame): its innermost knot lies
        # on the spiral r = r_in exp(b t), theta = bar_angle + k pi + t, t >= 0
        r = np.hypot(arm[:, 0], arm[:, 1])
        assert r.min() > 0.85 * r_in
        x, y = arm[0, :2]
        t0 = np.log(np.hypot(x, y) / r_in) / b
        assert t0 < 1.0
        want = np.radians(spec.bar_angle) + np.pi * k + t0
        dth = np.angle(np.exp(1j * (np.arctan2(y, x) - want)))
        assert abs(dth) < 0.1 + 0.1 / b  # angle jitter + 4 % radius jitter
    # the faint model keeps the old arms (no bar-end start)
    calls.clear()
    old = copy.deepcopy(spec)
    old.arms_from_bar = False
    build_galaxy(old)
    (kw, _), = calls
    assert "r_in" not in kw and "theta0" not in kw


def test_spiral_arm_knots_start_radius_and_phase():
    rng = np.random.default_rng(3)
    knots = spiral_arm_knots(3.0, 15.0, rng, per_arm=50, r_in=2.0, theta0=1.0)
    for k, arm in enumerate(np.split(knots, 2)):
        r = np.hypot(arm[:, 0], arm[:, 1])
        assert r.min() > 2.0 * 0.85  # no knot inside the bar end (4 % radial jitter)
        th = np.arctan2(arm[0, 1], arm[0, 0])
        assert abs(np.angle(np.exp(1j * (th - 1.0 - np.pi * k)))) < 0.3
    # the phase draw is consumed either way: same knots apart from the rotation
    a = spiral_arm_knots(3.0, 15.0, np.random.default_rng(4), per_arm=30)
    b = spiral_arm_knots(3.0, 15.0, np.random.default_rng(4), per_arm=30, theta0=0.0)
    np.testing.assert_allclose(np.hypot(a[:, 0], a[:, 1]), np.hypot(b[:, 0], b[:, 1]))
    np.testing.assert_allclose(a[:, 2:], b[:, 2:])


def _a2(img: np.ndarray, scale: float, radius: float) -> complex:
    """m = 2 Fourier coefficient of the light within ``radius`` (arcsec) of the centre."""
    n = img.shape[0]
    y, x = (np.mgrid[:n, :n] - (n - 1) / 2.0) * scale
    m = np.hypot(x, y) < radius
    return complex(np.sum(img[m] * np.exp(2j * np.arctan2(y[m], x[m]))) / np.sum(img[m]))


def test_visible_bar_shows_in_the_image():
    """Face-on: the m = 2 amplitude inside the bar end is far larger with the visible bar
    than with the faint one, and its phase follows the bar."""
    spec = _barred_visible_spiral()
    spec.inclination, spec.q, spec.bulge_q, spec.spin = 0.0, 1.0, 1.0, "Z"
    faint = copy.deepcopy(spec)
    faint.arms_from_bar = False
    faint.bar = "strong"
    bt = faint.bulge_to_total
    fb = 0.11  # a typical faint strong bar, arms as the faint model draws them
    fa = 0.45 * (1 - bt)
    faint.parts = {"bulge": ("E", bt), "arms": ("Im", fa), "bar": ("E", fb),
                   "disk": (spec.parts["disk"][0], 1 - bt - fa - fb)}
    faint.bar_length = 0.8 * spec.r50_disk
    n, scale = 96, 3.0 * spec.r50_disk / 48
    amp = {}
    for name, s in (("visible", spec), ("faint", faint)):
        img = build_galaxy(s).profile("r").drawImage(nx=n, ny=n, scale=scale,
                                                     method="no_pixel").array
        c = _a2(img, scale, 1.2 * bar_end_radius(s))
        amp[name] = abs(c)
        if name == "visible":
            # phase of the m = 2 light = bar position angle in the image (phi + bar_angle)
            pa = np.angle(c) / 2.0
            want = np.radians(s.phi + s.bar_angle)
            assert abs(np.angle(np.exp(2j * (pa - want)))) < 0.5
    assert amp["visible"] > 0.15
    assert amp["visible"] > 2.0 * amp["faint"]
