"""Training-stamp options of the structure samples.

Plain disks (``stamps.plain_fraction``, ``population.make_plain``): a disk galaxy's disk
(size, inclination, orientation, fluxes) without its bulge, arms, bar and knots, the
idealised profile size measurements are tested on. They draw from their own random
stream, so every other stamp of a set is the one the set would hold without them.

Coherent PSFs (``conditions.psf_coherence``): the bands share one seeing quantile and one
Moffat beta. Settings without the key keep their random stream.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

galsim = pytest.importorskip("galsim")

from tilecat.errors import ConfigError  # noqa: E402
from tilecat.simulate.conditions import draw_conditions  # noqa: E402
from tilecat.simulate.config import OPTIONAL, load_sim_config  # noqa: E402
from tilecat.simulate.population import (  # noqa: E402
    PLAIN_KINDS,
    draw_galaxies,
    labels,
    make_plain,
)
from tilecat.simulate.stamps import class_plan, render_stamp_chunk, stamp_config  # noqa: E402

STAMPS = Path(__file__).resolve().parents[1] / "config" / "stamps"


def test_plain_fraction_is_optional_and_validated():
    # absent from the merged settings of YAMLs that do not name it (cache tags unchanged)
    assert "plain_fraction" not in load_sim_config(STAMPS / "structure.yaml")["stamps"]
    assert OPTIONAL[("stamps", "plain_fraction")] == 0.0
    cfg = load_sim_config(None, overrides={"stamps": {"plain_fraction": 0.5}})
    assert cfg["stamps"]["plain_fraction"] == 0.5
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(ConfigError, match="stamps.plain_fraction"):
            load_sim_config(None, overrides={"stamps": {"plain_fraction": bad}})


def test_structure_plain_config_is_structure_with_plain_disks():
    plain = load_sim_config(STAMPS / "structure-plain.yaml")
    base = load_sim_config(STAMPS / "structure.yaml")
    assert plain["stamps"].pop("plain_fraction") == 1.0
    assert plain["stamps"].pop("central_r50_min") < base["stamps"].pop("central_r50_min")
    assert plain == base


def test_make_plain_keeps_the_disk_and_drops_the_rest():
    cfg = load_sim_config(STAMPS / "structure.yaml")
    specs = draw_galaxies(300, np.random.default_rng(3), stamp_config(cfg))
    seen = set()
    for spec in specs:
        if spec.kind not in PLAIN_KINDS or spec.companion is not None:
            with pytest.raises(ValueError, match="no disk"):
                make_plain(copy.deepcopy(spec))
            continue
        before = copy.deepcopy(spec)
        make_plain(spec)
        seen.add(spec.kind)
        assert spec.parts == {"disk": (before.parts["disk"][0], 1.0)}
        np.testing.assert_array_equal(spec.flux, before.flux)
        assert (spec.r50_disk, spec.q, spec.phi, spec.n_disk) == (
            before.r50_disk, before.q, before.phi, before.n_disk)
        assert spec.bulge_to_total == 0.0 and spec.n_knots == 0 and spec.bar == "none"
        lab = labels(spec)
        assert lab["spiral_arms"] is False and lab["spin"] == "none" and lab["bar"] == "none"
        assert lab["bulge_size"] == "none" and lab["t_class"] == "featured"
        assert lab["edge_on"] == (spec.kind == "edgeon")
    assert seen == set(PLAIN_KINDS)


def test_plain_stamps_change_only_the_disk_galaxies():
    cfg = stamp_config(load_sim_config(STAMPS / "structure.yaml"))
    plain = copy.deepcopy(cfg)
    plain["stamps"]["plain_fraction"] = 1.0
    classes, spins = class_plan(28, 7)
    a = render_stamp_chunk(cfg, 7, 0, classes, spins, size=32)
    b = render_stamp_chunk(plain, 7, 0, classes, spins, size=32)
    disk = np.isin(a["kind"], PLAIN_KINDS)
    assert disk.sum() >= 12 and (~disk).sum() >= 8
    # other stamps (ellipticals, mergers, stars, artefacts) are those of the plain set
    np.testing.assert_array_equal(a["stamps"][~disk], b["stamps"][~disk])
    # the disk galaxies: same kind, size, shape and fluxes, no bulge, arms or bar
    np.testing.assert_array_equal(a["kind"], b["kind"])
    np.testing.assert_allclose(a["mags"][disk], b["mags"][disk], atol=1e-4)
    np.testing.assert_array_equal(a["q"][disk], b["q"][disk])
    assert (b["bulge_to_total"][disk] == 0).all() and not b["spiral_arms"][disk].any()
    assert (a["bulge_to_total"][disk] > 0).any() and a["spiral_arms"][disk].any()
    assert set(b["bar"][disk]) == {"none"} and set(b["spin"][disk]) == {"none"}
    # an exponential disk's concentration gives Sersic n ~ 1 (face-on, n from r90/r50)
    exp_disk = disk & np.isin(b["kind"], ("spiral", "lenticular")) & (b["q"] > 0.6)
    assert exp_disk.sum() >= 3
    np.testing.assert_allclose(b["sersic_n"][exp_disk], 1.0, atol=0.2)
    assert not np.array_equal(a["stamps"][disk], b["stamps"][disk])


def test_psf_coherence_is_optional_and_validated():
    assert "psf_coherence" not in load_sim_config(STAMPS / "structure.yaml")["conditions"]
    assert OPTIONAL[("conditions", "psf_coherence")] == 0.0
    for bad in (2, -1, "yes", False):
        with pytest.raises(ConfigError, match="conditions.psf_coherence"):
            load_sim_config(None, overrides={"conditions": {"psf_coherence": bad}})


def test_coherent_psfs_share_seeing_and_beta():
    base = load_sim_config(STAMPS / "structure.yaml")
    coh = copy.deepcopy(base)
    coh["conditions"]["psf_coherence"] = 1.0
    zero = copy.deepcopy(base)
    zero["conditions"]["psf_coherence"] = 0.0
    bands = base["survey"]["bands"]
    spread = []
    for seed in range(20):
        a = draw_conditions(base, np.random.default_rng(seed))
        assert a == draw_conditions(zero, np.random.default_rng(seed))  # stream unchanged
        b = draw_conditions(coh, np.random.default_rng(seed))
        u = [(b[x].psf_fwhm - lo) / (hi - lo) for x in bands
             for lo, hi in [base["conditions"]["psf_fwhm"][x]]]
        np.testing.assert_allclose(u, u[0], atol=1e-12)
        assert len({b[x].psf_beta for x in bands}) == 1
        spread.append(np.ptp([a[x].psf_beta for x in bands]))
    assert np.median(spread) > 0.5  # independent bands differ


def test_structure_coherent_config_is_structure_with_one_psf():
    coh = load_sim_config(STAMPS / "structure-coherent.yaml")
    base = load_sim_config(STAMPS / "structure.yaml")
    assert coh["conditions"].pop("psf_coherence") == 1.0
    assert coh["stamps"].pop("plain_fraction") == 0.5
    assert coh["stamps"].pop("central_r50_min") < base["stamps"].pop("central_r50_min")
    assert coh == base
