"""Peer defect maskers for ``benchmarks/masking.py``: deepCR and MaxiMask, when installed.

Both are optional; each runner returns None when its peer cannot be run, and the
benchmark then reports null for its figures.

deepCR (Zhang & Bloom 2020; PyPI ``deepCR``, PyTorch)
    Installed in the project's venv by the ``peers`` extra (it installs alongside
    torch 2.13: ``pip install -c <(echo torch==2.13.0) -e '.[peers]'``). Its ``decam``
    mask model ships inside the package (``learned_models/mask/decam.pth``). Per its
    model-zoo notes the input is a calibrated single exposure *in its original unit
    (ADU), sky included*; its output (``clean(..., binary=False)``) is a cosmic-ray
    probability per pixel, used here threshold-free as the score. It is run as its
    docs advise for large images (``segment=True, patch=1024``, ``n_jobs=1``), under
    ``torch.no_grad()`` (deepCR itself builds the autograd graph; the output is
    identical, only slower), with the benchmark's torch thread count.

MaxiMask (Paillassa et al. 2020; PyPI ``MaxiMask``, TensorFlow)
    TensorFlow cannot share the project's venv (torch is pinned there), so it lives in
    a separate venv, e.g.::

        python3.11 -m venv /work/peers-venv
        /work/peers-venv/bin/pip install MaxiMask tensorflow-cpu

    and the benchmark calls it through a subprocess (this file's
    ``maximask-worker`` entry point, which needs only numpy and MaxiMask) when given
    ``--maximask-python /work/peers-venv/bin/python`` or the environment variable
    ``TILECAT_MAXIMASK_PYTHON``; it is imported in-process when importable. MaxiMask's
    own preprocessing is used (``utils.image_norm``: clip to [-500, 80000], SExtractor-
    like background subtraction and division by the background sigma, mesh 200), so it
    takes any unit with the sky in; we give it the same DECam-like ADU image as deepCR.
    Raw probabilities are used (no prior modification, no thresholding: both are
    monotonic per class, so ROC/AP are unchanged). Its network sees 400x400 blocks
    with stride 200 and keeps the central 200x200 of each (its ``process_batch``);
    images smaller than 400 pixels on a side (our 128^2 patches, the small DECam CP
    crops) are embedded in Gaussian sky noise drawn from the image's own median and
    MAD-sigma (seeded) and the predictions cropped back. Its ``process_image`` re-runs
    the last partial batch after every full batch (an indentation slip in 1.4.1); the
    worker batches the same blocks once each, with the same outputs, so its throughput
    is not penalised by that. TensorFlow's first call with each batch length (graph
    optimisation, tens of seconds on this machine) is made untimed before the timed run
    and reported apart (``maximask_warmup_s``), like the model load.

    Class mapping onto ours (``tilecat.bits.DEFECT_CLASSES``), max of the probabilities:
    cosmic_ray <- CR; hot <- HCL, HP; dead <- DCL, DP; trail <- TRL; saturated <- SAT;
    bleed <- SAT (MaxiMask has no bleed class; a bleed column is saturated charge, SAT is
    its nearest class); persistence <- P.

Sky-subtracted nanomaggy images (simulated patches, Legacy Survey coadd) are put in
DECam-exposure-like ADU for both peers: ``adu = flux * sigma_ref / sigma + sky_ref`` with
``sky_ref`` = 300 ADU, gain 4 e-/ADU and read noise 6 e- (``sigma_ref`` = 8.8 ADU, a
typical r-band exposure, cf. the DECam CP crops' AVSKY 100-2900 ADU) and ``sigma`` the
image's own background sigma (nanomaggy): the signal-to-noise of every pixel is kept.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: DECam-like reference exposure: sky (ADU), gain (e-/ADU), read noise (e-).
DECAM_SKY_ADU = 300.0
DECAM_GAIN = 4.0
DECAM_READ_NOISE_E = 6.0
#: Background sigma of that exposure, ADU.
DECAM_SIGMA_ADU = float(np.sqrt(DECAM_SKY_ADU / DECAM_GAIN
                                 + (DECAM_READ_NOISE_E / DECAM_GAIN) ** 2))

#: MaxiMask's 14 output classes, in its output order.
MAXIMASK_CLASSES: tuple[str, ...] = ("CR", "HCL", "DCL", "HP", "DP", "P", "TRL", "FR", "NEB",
                                     "SAT", "SP", "OV", "BBG", "BG")
#: Our classes (``tilecat.bits.DEFECT_CLASSES`` order) <- MaxiMask classes (max).
MAXIMASK_TO_OURS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cosmic_ray", ("CR",)),
    ("hot", ("HCL", "HP")),
    ("dead", ("DCL", "DP")),
    ("trail", ("TRL",)),
    ("saturated", ("SAT",)),
    ("bleed", ("SAT",)),
    ("persistence", ("P",)),
)
MAXIMASK_BLOCK = 400
MAXIMASK_PYTHON_ENV = "TILECAT_MAXIMASK_PYTHON"


def to_decam_adu(flux: np.ndarray, sigma: float) -> np.ndarray:
    """Sky-subtracted image -> DECam-exposure-like ADU with the sky in.

    Parameters
    ----------
    flux : ndarray, shape (ny, nx)
        Sky-subtracted image (any unit, e.g. nanomaggy); non-finite values become 0.
    sigma : float
        Its background noise per pixel, same unit (> 0).

    Returns
    -------
    ndarray of float32, shape (ny, nx)
        ``flux * DECAM_SIGMA_ADU / sigma + DECAM_SKY_ADU``.
    """
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"to_decam_adu: background sigma must be finite and > 0, got {sigma}")
    f = np.where(np.isfinite(flux), flux, 0.0)
    return (f * (DECAM_SIGMA_ADU / sigma) + DECAM_SKY_ADU).astype(np.float32)


def sigma_from_invvar_median(invvar: np.ndarray) -> float:
    """Median background sigma of an inverse-variance map (its valid pixels)."""
    iv = np.asarray(invvar, np.float64)
    ok = np.isfinite(iv) & (iv > 0)
    if not ok.any():
        raise ValueError("sigma_from_invvar_median: no pixel with positive inverse variance")
    return float(np.median(1.0 / np.sqrt(iv[ok])))


# --------------------------------------------------------------------------- deepCR


class DeepCR:
    """deepCR's DECam cosmic-ray mask model (in-process, PyTorch).

    Attributes
    ----------
    model : deepCR.deepCR
    version : str
    load_s : float
        Model load time, seconds.
    """

    name = "deepCR"

    def __init__(self, model: Any, version: str, load_s: float) -> None:
        self.model = model
        self.version = version
        self.load_s = load_s

    @classmethod
    def load(cls) -> DeepCR | None:
        """The ``decam`` model, or None when deepCR is not importable (reason printed)."""
        try:
            from deepCR import deepCR
        except Exception as e:  # ImportError, or a broken install of its dependencies
            print(f"deepCR not available ({type(e).__name__}: {e}): its figures are null")
            return None
        from importlib.metadata import version

        t = time.perf_counter()
        model = deepCR(mask="decam", device="CPU")
        return cls(model, version("deepCR"), time.perf_counter() - t)

    def cr_prob(self, img_adu: np.ndarray) -> np.ndarray:
        """Cosmic-ray probability per pixel.

        Parameters
        ----------
        img_adu : ndarray, shape (ny, nx)
            Single-exposure image in ADU, sky included.

        Returns
        -------
        ndarray of float32, shape (ny, nx), in [0, 1].
        """
        import torch

        with torch.no_grad():
            p = self.model.clean(np.asarray(img_adu, np.float32), binary=False, segment=True,
                                 patch=1024, n_jobs=1)
        return np.asarray(p, np.float32)


# --------------------------------------------------------------------------- MaxiMask


def _pad_sky(img: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Embed ``img`` in Gaussian sky noise so that both sides are >= ``size``.

    Returns the padded image and the (y, x) offset of ``img`` in it.
    """
    ny, nx = img.shape
    if ny >= size and nx >= size:
        return img, (0, 0)
    fin = img[np.isfinite(img)]
    med = float(np.median(fin)) if fin.size else 0.0
    sig = float(1.4826 * np.median(np.abs(fin - med))) if fin.size else 1.0
    Y, X = max(size, ny), max(size, nx)
    rng = np.random.default_rng([20240611, int(seed)])
    out = (med + sig * rng.standard_normal((Y, X))).astype(np.float32)
    y0, x0 = (Y - ny) // 2, (X - nx) // 2
    out[y0:y0 + ny, x0:x0 + nx] = img
    return out, (y0, x0)


def maximask_run(images: Sequence[np.ndarray], threads: int = 1, batch_size: int = 8,
                 net_dir: str | None = None) -> dict[str, Any]:
    """Run MaxiMask (must be importable here) on images; map its classes onto ours.

    Parameters
    ----------
    images : sequence of ndarray, each (ny, nx)
        Images with the sky in (any unit; MaxiMask normalises them itself).
    threads : int
        TensorFlow intra- and inter-op threads.
    batch_size : int
        Blocks of 400x400 per network call (MaxiMask's default 8).
    net_dir : str, optional
        SavedModel directory; default the one shipped with MaxiMask.

    Returns
    -------
    dict
        ``probs``: list of float32 (7, ny, nx) arrays in ``MAXIMASK_TO_OURS`` order;
        ``seconds``: per-image time (padding, MaxiMask's normalisation, inference,
        mapping); ``load_s``; ``warmup_s`` (untimed first calls, one per batch
        length); ``tf_version``; ``maximask_version``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from importlib.metadata import version

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    from maximask_and_maxitrack import utils
    from maximask_and_maxitrack.maximask import maximask as mm

    if net_dir is None:
        net_dir = os.path.join(os.path.dirname(mm.__file__), "model")
    nb = len(MAXIMASK_CLASSES)
    inf = mm.MaxiMask_inference(im_path="", net_dir=net_dir, class_flags=np.ones(nb, bool),
                                priors=None, thresholds=None, sing_mask=False,
                                batch_size=int(batch_size))
    t = time.perf_counter()
    model = tf.saved_model.load(net_dir)
    load_s = time.perf_counter() - t
    idx = {c: i for i, c in enumerate(MAXIMASK_CLASSES)}
    probs, seconds = [], []
    warmed: set[int] = set()
    warmup_s = 0.0
    bs = inf.batch_size
    for i, img in enumerate(images):
        im = np.asarray(img, np.float32)
        ny, nx = im.shape
        # TensorFlow optimises the graph on the first call with each batch length
        # (~30 s for 8 blocks here, against ~10 s steady): warm those up untimed,
        # as a one-off cost like the model load
        nblk = len(inf.get_block_coords(max(ny, MAXIMASK_BLOCK), max(nx, MAXIMASK_BLOCK)))
        for n in {min(bs, nblk), nblk % bs} - warmed - {0}:
            t = time.perf_counter()
            z = np.zeros((n, MAXIMASK_BLOCK, MAXIMASK_BLOCK, 1), np.float32)
            model([z, inf.class_idx, inf.prior_factors, inf.thresh_inf, inf.bin_powers], False)
            warmup_s += time.perf_counter() - t
            warmed.add(n)
        t = time.perf_counter()
        padded, (y0, x0) = _pad_sky(im, MAXIMASK_BLOCK, i)
        norm, _ = utils.image_norm(padded)
        h, w = norm.shape
        preds = np.zeros((h, w, nb), np.float32)
        coords = inf.get_block_coords(h, w)
        for s in range(0, len(coords), inf.batch_size):
            inf.process_batch(norm, preds, model, coords[s:s + inf.batch_size])
        raw = preds[y0:y0 + ny, x0:x0 + nx]
        out = np.stack([raw[..., [idx[c] for c in src]].max(axis=-1)
                        for _, src in MAXIMASK_TO_OURS])
        seconds.append(time.perf_counter() - t)
        probs.append(out.astype(np.float32))
    return {"probs": probs, "seconds": seconds, "load_s": load_s, "warmup_s": warmup_s,
            "tf_version": tf.__version__, "maximask_version": version("MaxiMask")}


class MaxiMask:
    """MaxiMask, in-process when importable, else through ``python`` (another venv).

    Attributes
    ----------
    python : str or None
        Interpreter of the venv holding MaxiMask; None for in-process.
    threads : int
    version : str or None
        Filled after the first run.
    load_s : float or None
        Model load time of the last run, seconds.
    """

    name = "MaxiMask"

    def __init__(self, python: str | None, threads: int) -> None:
        self.python = python
        self.threads = int(threads)
        self.version: str | None = None
        self.load_s: float | None = None

    @classmethod
    def load(cls, python: str | None, threads: int) -> MaxiMask | None:
        """A runner, or None when MaxiMask is neither importable nor given (reason printed).

        Parameters
        ----------
        python : str, optional
            Interpreter with MaxiMask and TensorFlow (``--maximask-python``); default
            ``$TILECAT_MAXIMASK_PYTHON``.
        threads : int
        """
        python = python or os.environ.get(MAXIMASK_PYTHON_ENV) or None
        if python:
            if not Path(python).exists():
                print(f"MaxiMask python {python} does not exist: MaxiMask figures are null")
                return None
            return cls(python, threads)
        import importlib.util

        if (importlib.util.find_spec("maximask_and_maxitrack") is not None
                and importlib.util.find_spec("tensorflow") is not None):
            return cls(None, threads)
        print("MaxiMask not available (not importable; give --maximask-python or "
              f"${MAXIMASK_PYTHON_ENV}): its figures are null")
        return None

    def run(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """See :func:`maximask_run`; raises RuntimeError naming the failure."""
        if self.python is None:
            res = maximask_run(images, threads=self.threads)
        else:
            with tempfile.TemporaryDirectory(prefix="maximask-") as d:
                src, dst = Path(d) / "in.npz", Path(d) / "out.npz"
                np.savez(src, **{f"img_{i}": np.asarray(a, np.float32)
                                 for i, a in enumerate(images)})
                env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                           OMP_NUM_THREADS=str(self.threads), CUDA_VISIBLE_DEVICES="-1")
                cmd = [self.python, str(Path(__file__).resolve()), "maximask-worker",
                       str(src), str(dst), "--threads", str(self.threads)]
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if r.returncode != 0 or not dst.exists():
                    tail = "\n".join(r.stderr.strip().splitlines()[-15:])
                    raise RuntimeError(f"MaxiMask worker {' '.join(cmd)} failed "
                                       f"(exit {r.returncode}):\n{tail}")
                with np.load(dst, allow_pickle=False) as z:
                    n = int(z["n"])
                    res = {"probs": [z[f"p_{i}"] for i in range(n)],
                           "seconds": [float(s) for s in z["seconds"]],
                           "load_s": float(z["load_s"]), "warmup_s": float(z["warmup_s"]),
                           "tf_version": str(z["tf_version"]),
                           "maximask_version": str(z["maximask_version"])}
        self.version = f"{res['maximask_version']} (tensorflow {res['tf_version']})"
        self.load_s = res["load_s"]
        return res


def _worker_main(argv: Sequence[str]) -> None:
    ap = argparse.ArgumentParser(prog="peers_masking.py maximask-worker",
                                 description="Run MaxiMask on the images of an .npz (img_0, "
                                             "img_1, ...) and write mapped probabilities.")
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args(argv)
    with np.load(a.src, allow_pickle=False) as z:
        keys = sorted((k for k in z.files if k.startswith("img_")), key=lambda k: int(k[4:]))
        images = [z[k] for k in keys]
    res = maximask_run(images, threads=a.threads, batch_size=a.batch_size)
    tmp = a.dst + ".part.npz"
    np.savez(tmp, n=len(images), seconds=np.asarray(res["seconds"]), load_s=res["load_s"],
             warmup_s=res["warmup_s"],
             tf_version=res["tf_version"], maximask_version=res["maximask_version"],
             **{f"p_{i}": p for i, p in enumerate(res["probs"])})
    os.replace(tmp, a.dst)


# --------------------------------------------------------------------------- figures


def _f(a: float | None, w: int = 7) -> str:
    return "-".center(w) if a is None else f"{a:{w}.4f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else float(a) / float(b)


def _metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float | int | None]:
    from tilecat.mask.metrics import class_metrics

    return class_metrics(y[None], s[None], ["x"])["x"]


def sim_peers(peers: dict[str, Any], flux: np.ndarray, sigma: np.ndarray, y: np.ndarray,
              p_ours: np.ndarray, ours: dict[str, dict],
              classes: Sequence[str]) -> dict[str, Any]:
    """Peers on the simulated held-out patches.

    Parameters
    ----------
    peers : dict
        ``{"deepcr": DeepCR | None, "maximask": MaxiMask | None}``.
    flux : ndarray, shape (n, h, w)
        Sky-subtracted patches, nanomaggy.
    sigma : ndarray, shape (n,)
        Their background sigma, nanomaggy.
    y : ndarray of bool, shape (n_class, n * h * w)
        Truth per class (our class order, patch-major pixels as ``flux.ravel()``).
    p_ours : ndarray, shape (n_class, n * h * w)
        Our probabilities, same layout.
    ours : dict
        Our per-class metrics (``class_metrics`` output).
    classes : sequence of str
        Our class names (``DEFECT_CLASSES``).
    """
    out: dict[str, Any] = {}
    adu = [to_decam_adu(flux[i], float(sigma[i])) for i in range(len(flux))]
    k_cr = list(classes).index("cosmic_ray")
    oc = ours.get("cosmic_ray", {})
    # cosmic rays against defect-free pixels only: a cosmic-ray-only peer (deepCR) also
    # fires on hot pixels, columns and bleeds, which are negatives in the 7-class truth
    keep = y[k_cr] | ~y.any(axis=0)
    oc_clean = _metrics(y[k_cr][keep], p_ours[k_cr][keep])
    out["cr_vs_clean_sim_metrics"] = oc_clean
    hdr = f"{'':22s} {'AUC':>7s} {'AP':>7s} {'TPR@1e-3':>9s} {'TPR@1e-4':>9s}"
    dc = peers.get("deepcr")
    if dc is not None:
        t = time.perf_counter()
        s = np.stack([dc.cr_prob(a) for a in adu]).ravel()
        dt = time.perf_counter() - t
        m = _metrics(y[k_cr], s)
        mc = _metrics(y[k_cr][keep], s[keep])
        out["deepcr_sim_metrics"] = {"cosmic_ray": m, "cosmic_ray_vs_clean": mc}
        print(f"\ndeepCR {dc.version} (decam model) on the same {len(flux)} simulated patches "
              f"(DECam-like ADU, {flux.size / 1e6 / dt:.3f} Mpix/s):")
        print(hdr)
        for who, v in (("masker cosmic_ray", oc), ("deepCR cosmic_ray", m),
                       ("masker CR vs clean", oc_clean), ("deepCR CR vs clean", mc)):
            print(f"{who:22s} {_f(v.get('auc'))} {_f(v.get('ap'))} "
                  f"{_f(v.get('tpr_at_fpr_1e-03'), 9)} "
                  f"{_f(v.get('tpr_at_fpr_1e-04'), 9)}")
        print(f"  masker/deepCR CR AP ratio {_f(_ratio(oc.get('ap'), m['ap']))} (all pixels), "
              f"{_f(_ratio(oc_clean['ap'], mc['ap']))} (CR vs defect-free pixels)")
    mx = peers.get("maximask")
    if mx is not None:
        res = mx.run(adu)
        p = np.stack(res["probs"], axis=1).reshape(len(MAXIMASK_TO_OURS), -1)
        names = [c for c, _ in MAXIMASK_TO_OURS]
        from tilecat.mask.metrics import class_metrics

        yy = np.stack([y[list(classes).index(c)] for c in names])
        m = class_metrics(yy, p, names)
        mc = _metrics(y[k_cr][keep], p[0][keep])
        out["maximask_sim_metrics"] = m
        out["maximask_cr_vs_clean_sim_metrics"] = mc
        dt = sum(res["seconds"])
        print(f"\nMaxiMask {mx.version} on the same {len(flux)} simulated patches "
              f"(DECam-like ADU, embedded in 400^2 sky; {flux.size / 1e6 / dt:.3f} Mpix/s "
              f"of patch pixels), mapped classes:")
        print(f"{'class':12s} {'n_pos':>8s} {'AUC ours':>9s} {'AUC MM':>8s} {'AP ours':>8s} "
              f"{'AP MM':>7s} {'TPR@1e-3 ours/MM':>17s} {'TPR@1e-4 ours/MM':>17s}")
        for c in names:
            o, v = ours.get(c, {}), m[c]
            print(f"{c:12s} {v['n_pos']:8d} {_f(o.get('auc'), 9)} {_f(v['auc'], 8)} "
                  f"{_f(o.get('ap'), 8)} {_f(v['ap'])} {_f(o.get('tpr_at_fpr_1e-03'))}/"
                  f"{_f(v['tpr_at_fpr_1e-03'])}  {_f(o.get('tpr_at_fpr_1e-04'))}/"
                  f"{_f(v['tpr_at_fpr_1e-04'])}")
        print(f"  CR vs defect-free pixels: masker AUC {_f(oc_clean['auc'])} AP "
              f"{_f(oc_clean['ap'])} TPR@1e-4 {_f(oc_clean['tpr_at_fpr_1e-04'])}; MaxiMask AUC "
              f"{_f(mc['auc'])} AP {_f(mc['ap'])} TPR@1e-4 {_f(mc['tpr_at_fpr_1e-04'])}")
        print(f"  masker/MaxiMask CR AP ratio {_f(_ratio(oc.get('ap'), m['cosmic_ray']['ap']))} "
              f"(all pixels), {_f(_ratio(oc_clean['ap'], mc['ap']))} (CR vs defect-free)")
    return out


def decam_peers(peers: dict[str, Any], images: Sequence[np.ndarray], codes: np.ndarray,
                cp_codes: dict[int, str], ours: dict[str, dict]) -> dict[str, Any]:
    """Peers on the real DECam CP crops (``ooi`` in ADU with the sky in, fed as is).

    Parameters
    ----------
    images : sequence of ndarray, each (ny, nx)
        The crops' ``ooi`` images, ADU.
    codes : ndarray of int, shape (sum of pixels,)
        CP ``ood`` codes, concatenated in the same order.
    cp_codes : dict
        Code -> our scored name (``cosmic_ray``, ``bad``, ``saturated``, ``bleed``).
    ours : dict
        Our per-code metrics (name -> {"auc", "ap", ...}).
    """
    out: dict[str, Any] = {}
    clean = codes == 0
    cr = codes == 5
    o = ours.get("cosmic_ray", {})
    dc = peers.get("deepcr")
    if dc is not None:
        s = np.concatenate([dc.cr_prob(im).ravel() for im in images])
        r = _metrics(cr, s)
        out["deepcr_real_metrics"] = {"cosmic_ray": r}
        out["deepcr_cr_flag_fraction_unflagged_real"] = float((s[clean] >= 0.5).mean())
        print(f"  deepCR (decam) CP code 5 (cosmic_ray): AUC {_f(r['auc'])} AP {_f(r['ap'])} "
              f"TPR@1e-4 {_f(r['tpr_at_fpr_1e-04'])} | masker AUC {_f(o.get('auc'))} AP "
              f"{_f(o.get('ap'))} | AP ratio masker/deepCR {_f(_ratio(o.get('ap'), r['ap']))}; "
              f"deepCR flags (p>=0.5) {out['deepcr_cr_flag_fraction_unflagged_real']:.2e} of "
              "CP-unflagged pixels")
    mx = peers.get("maximask")
    if mx is not None:
        res = mx.run(list(images))
        p = np.concatenate([a.reshape(len(MAXIMASK_TO_OURS), -1) for a in res["probs"]], axis=1)
        k = {c: i for i, (c, _) in enumerate(MAXIMASK_TO_OURS)}
        scores = {"cosmic_ray": p[k["cosmic_ray"]],
                  "bad": np.maximum(p[k["hot"]], p[k["dead"]]),
                  "saturated": np.maximum(p[k["saturated"]], p[k["bleed"]]),
                  "bleed": np.maximum(p[k["saturated"]], p[k["bleed"]])}
        real = {}
        for code, name in cp_codes.items():
            real[name] = r = _metrics(codes == code, scores[name])
            oo = ours.get(name, {})
            print(f"  MaxiMask CP code {code} ({name}): {r['n_pos']} px, AUC {_f(r['auc'])} "
                  f"AP {_f(r['ap'])} | masker AUC {_f(oo.get('auc'))} AP {_f(oo.get('ap'))}")
        out["maximask_real_metrics"] = real
    return out


def speed_peers(peers: dict[str, Any], img: np.ndarray, invvar: np.ndarray,
                ours_mpix_per_s: float) -> dict[str, Any]:
    """Peers' throughput on the benchmark's real coadd region (converted to DECam-like
    ADU, conversion timed), ratios masker/peer."""
    out: dict[str, Any] = {}
    mpix = img.size / 1e6
    dc = peers.get("deepcr")
    if dc is not None:
        t = time.perf_counter()
        dc.cr_prob(to_decam_adu(img, sigma_from_invvar_median(invvar)))
        dt = time.perf_counter() - t
        out.update(deepcr_mpix_per_s=mpix / dt, deepcr_model_load_s=dc.load_s,
                   speed_vs_deepcr=ours_mpix_per_s / (mpix / dt))
        print(f"deepCR on the same pixels: {mpix / dt:.3f} Mpix/s ({dt:.2f} s), model load "
              f"{dc.load_s * 1e3:.0f} ms; masker/deepCR speed ratio {out['speed_vs_deepcr']:.3f} "
              "(deepCR: cosmic rays only)")
    mx = peers.get("maximask")
    if mx is not None:
        t = time.perf_counter()
        adu = to_decam_adu(img, sigma_from_invvar_median(invvar))
        conv = time.perf_counter() - t
        res = mx.run([adu])
        dt = res["seconds"][0] + conv
        out.update(maximask_mpix_per_s=mpix / dt, maximask_model_load_s=res["load_s"],
                   maximask_warmup_s=res["warmup_s"],
                   speed_vs_maximask=ours_mpix_per_s / (mpix / dt))
        print(f"MaxiMask on the same pixels: {mpix / dt:.3f} Mpix/s ({dt:.2f} s, its "
              f"normalisation included), model load {res['load_s']:.2f} s + graph warm-up "
              f"{res['warmup_s']:.1f} s (untimed); masker/MaxiMask "
              f"speed ratio {out['speed_vs_maximask']:.3f} (MaxiMask: 14 classes)")
    return out


def summary(res: dict[str, Any], peers: dict[str, Any]) -> dict[str, Any]:
    """Peers' keys of the final JSON line (null when a peer did not run)."""

    def g(d: str, c: str, k: str) -> Any:
        return res.get(d, {}).get(c, {}).get(k)

    ours_sim = res.get("sim_metrics", {})
    ours_real = res.get("real_metrics", {})
    out: dict[str, Any] = {}
    for peer in ("deepcr", "maximask"):
        for sfx, d, ok in (("sim", f"{peer}_sim_metrics", ours_sim),
                           ("real", f"{peer}_real_metrics", ours_real)):
            out[f"{peer}_cr_auc_{sfx}"] = g(d, "cosmic_ray", "auc")
            out[f"{peer}_cr_ap_{sfx}"] = g(d, "cosmic_ray", "ap")
            out[f"{peer}_cr_tpr_at_1e-3_{sfx}"] = g(d, "cosmic_ray", "tpr_at_fpr_1e-03")
            out[f"{peer}_cr_tpr_at_1e-4_{sfx}"] = g(d, "cosmic_ray", "tpr_at_fpr_1e-04")
            out[f"cr_ap_{sfx}_vs_{peer}"] = _ratio(ok.get("cosmic_ray", {}).get("ap"),
                                                   out[f"{peer}_cr_ap_{sfx}"])
        out[f"{peer}_mpix_per_s"] = res.get(f"{peer}_mpix_per_s")
        out[f"{peer}_model_load_s"] = res.get(f"{peer}_model_load_s")
        if peer == "maximask":
            out["maximask_warmup_s"] = res.get("maximask_warmup_s")
        out[f"speed_vs_{peer}"] = res.get(f"speed_vs_{peer}")
        out[f"{peer}_version"] = getattr(peers.get(peer), "version", None)
    oc = res.get("cr_vs_clean_sim_metrics", {})
    out["cr_ap_vs_clean_sim"] = oc.get("ap")
    for peer, d in (("deepcr", res.get("deepcr_sim_metrics", {}).get("cosmic_ray_vs_clean")),
                    ("maximask", res.get("maximask_cr_vs_clean_sim_metrics"))):
        out[f"{peer}_cr_ap_vs_clean_sim"] = None if d is None else d["ap"]
        out[f"{peer}_cr_tpr_at_1e-4_vs_clean_sim"] = None if d is None else d["tpr_at_fpr_1e-04"]
        out[f"cr_ap_vs_clean_sim_vs_{peer}"] = _ratio(oc.get("ap"),
                                                      out[f"{peer}_cr_ap_vs_clean_sim"])
    mm_sim = res.get("maximask_sim_metrics")
    mm_real = res.get("maximask_real_metrics")
    out["maximask_auc_sim"] = None if mm_sim is None else {c: v["auc"] for c, v in mm_sim.items()}
    out["maximask_ap_sim"] = None if mm_sim is None else {c: v["ap"] for c, v in mm_sim.items()}
    out["maximask_auc_real"] = (None if mm_real is None
                                else {c: v["auc"] for c, v in mm_real.items()})
    out["deepcr_cr_flag_fraction_unflagged_real"] = res.get(
        "deepcr_cr_flag_fraction_unflagged_real")
    return out


def load_peers(names: Sequence[str], maximask_python: str | None,
               threads: int) -> dict[str, Any]:
    """``{"deepcr": DeepCR | None, "maximask": MaxiMask | None}`` for the requested names."""
    names = {n.strip().lower() for n in names if n.strip()}
    unknown = names - {"deepcr", "maximask"}
    if unknown:
        raise SystemExit(f"--peers: unknown peer(s) {sorted(unknown)} (known: deepcr, maximask)")
    peers: dict[str, Any] = {"deepcr": None, "maximask": None}
    if "deepcr" in names:
        peers["deepcr"] = DeepCR.load()
    if "maximask" in names:
        peers["maximask"] = MaxiMask.load(maximask_python, threads)
    return peers


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "maximask-worker":
        _worker_main(sys.argv[2:])
    else:
        raise SystemExit("usage: peers_masking.py maximask-worker SRC.npz DST.npz [--threads N]"
                         " (the benchmark itself is benchmarks/masking.py)")
