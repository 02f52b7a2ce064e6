"""Benchmark stamp sets: cache names encode the simulation settings; models get their inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tilecat.calibrate.stampsets import sim_config_tag, stamp_set_path

ROOT = Path(__file__).resolve().parents[1]
MORPH_CONFIG = ROOT / "config" / "stamps" / "morphology.yaml"


def test_tag_encodes_the_settings(tmp_path):
    demo = sim_config_tag(None)
    morph = sim_config_tag(MORPH_CONFIG)
    assert demo.startswith("demo-") and morph.startswith("morphology-")
    assert demo.split("-")[1] != morph.split("-")[1]
    assert sim_config_tag(MORPH_CONFIG) == morph  # stable
    # an edit of the YAML changes the name, a comment does not (merged settings)
    edited = tmp_path / "morphology.yaml"
    edited.write_text(MORPH_CONFIG.read_text() + "\n# a comment\n")
    assert sim_config_tag(edited) == morph
    edited.write_text(MORPH_CONFIG.read_text().replace("central_mag_limit: 20.0",
                                                       "central_mag_limit: 19.5"))
    assert sim_config_tag(edited) != morph
    # a YAML that only restates a default names the same settings as the demo survey
    same = tmp_path / "empirical.yaml"
    same.write_text("population:\n  kind: empirical\n")
    assert sim_config_tag(same).split("-")[1] == demo.split("-")[1]


def test_stamp_set_path_names():
    p = stamp_set_path("cache", "calib-cal", MORPH_CONFIG, 7101, 4000)
    assert p == Path("cache") / f"calib-cal-{sim_config_tag(MORPH_CONFIG)}-s7101-n4000.zarr"
    t = stamp_set_path("cache", "calib-cal", None, 7101, 4000, heldout=False)
    assert t.name.startswith("calib-cal-demo-") and t.name.endswith("-s7101-n4000-train.zarr")
    # never the pre-config names (those sets were the demo survey's population)
    assert p.name != "calib-cal-s7101-n4000.zarr"


def test_stamp_outputs_pass_the_psf_to_the_shipped_morphology_model(tmp_path):
    """The shipped morphology model takes the PSF FWHM: labelled stamp sets must pass it."""
    from tilecat.calibrate.labelled import load_labelled, stamp_outputs
    from tilecat.models import load_card, model_dir
    from tilecat.simulate.config import load_sim_config
    from tilecat.simulate.stamps import make_galaxy_stamps

    try:
        d = model_dir("morphology")
        card = load_card(d)
    except Exception:
        pytest.skip("no shipped morphology model")
    out = make_galaxy_stamps(load_sim_config(MORPH_CONFIG), tmp_path / "s.zarr", 8, seed=3,
                             heldout=True)
    cols, labels, attrs = stamp_outputs(card, d, out, log=lambda msg: None)
    assert attrs["seed"] == 3 and attrs["heldout"] is True
    assert {"kind", "t_class", "merger"} <= set(labels)
    probs = np.stack([cols[f"morph_t_{a}_raw"] for a in ("smooth", "featured", "artifact")], 1)
    assert probs.shape == (8, 3)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-3)
    lab = load_labelled(card, d, out, log=lambda msg: None)
    assert lab.source["n_objects"] == 8 and lab.source["heldout"] is True
    assert np.array_equal(lab.probs["t"], probs.astype(np.float64))
    assert set(lab.targets) >= {"t", "bar", "merger"}
