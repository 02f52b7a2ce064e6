"""Per-source footprint statistics: defect bits, masked fraction, blending, edges.

The footprint of source k is its segmentation pixels (``segmap == k``) plus the
masked pixels next to them: masked pixels are never part of the segmentation map
(detection gives them zero weight), so a cosmic ray on a galaxy leaves a hole in
its segment. Masked pixels reachable from the segment through masked, unassigned
pixels within ``grow`` steps (8-connectivity) are added back.

Statistics over the footprint:

* ``defect_bits``: bitwise OR of the pixel bits (any band),
* ``masked_frac``: fraction of footprint pixels with any bit set (any band),
* ``flag_masked``: some footprint pixel is masked (detection mask bits or zero
  weight) in some band,
* ``touching``: the segment touches another source's segment (8-connectivity),
* ``flag_edge``: the segment's bounding box is within ``margin`` pixels of the
  image border.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FootprintStats", "footprint_stats", "touching_neighbours", "near_edge"]

_SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


@dataclass(frozen=True)
class FootprintStats:
    """Footprint statistics of n sources (index k-1 for segment k).

    Attributes
    ----------
    defect_bits : ndarray of uint16, shape (n,)
    masked_frac : ndarray of float32, shape (n,)
    flag_masked : ndarray of bool, shape (n,)
    npix : ndarray of int64, shape (n,)
        Footprint size in pixels.
    """

    defect_bits: np.ndarray
    masked_frac: np.ndarray
    flag_masked: np.ndarray
    npix: np.ndarray


def _shifted_pairs(a: np.ndarray, b: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, ...]:
    """Views of ``a`` at p and ``b`` at p + (dy, dx) over the overlapping region."""
    ny, nx = a.shape
    ys = slice(max(0, -dy), ny - max(0, dy))
    xs = slice(max(0, -dx), nx - max(0, dx))
    yd = slice(max(0, dy), ny - max(0, -dy))
    xd = slice(max(0, dx), nx - max(0, -dx))
    return a[ys, xs], b[yd, xd]


def touching_neighbours(segmap: np.ndarray, n: int) -> np.ndarray:
    """True for sources whose segment touches another source's segment.

    Parameters
    ----------
    segmap : ndarray of int32, shape (ny, nx)
    n : int
        Number of sources.

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    out = np.zeros(n + 1, dtype=bool)
    for dy, dx in _SHIFTS[4:]:  # half the neighbourhood suffices (pairs are symmetric)
        s0, s1 = _shifted_pairs(segmap, segmap, dy, dx)
        diff = (s0 != s1) & (s0 > 0) & (s1 > 0)
        out[s0[diff]] = True
        out[s1[diff]] = True
    return out[1:]


def near_edge(objects: np.ndarray, shape: tuple[int, int], margin: int = 2) -> np.ndarray:
    """True where a source's bounding box comes within ``margin`` pixels of the border."""
    ny, nx = shape
    return ((objects["xmin"] < margin) | (objects["ymin"] < margin)
            | (objects["xmax"] > nx - 1 - margin) | (objects["ymax"] > ny - 1 - margin))


def footprint_stats(
    segmap: np.ndarray,
    bits: np.ndarray,
    masked: np.ndarray,
    n: int,
    grow: int = 2,
) -> FootprintStats:
    """Defect statistics over each source's footprint.

    Parameters
    ----------
    segmap : ndarray of int32, shape (ny, nx)
        Segmentation map, labels 1..n.
    bits : ndarray of uint16, shape (ny, nx)
        Defect / data-quality bits, OR over bands.
    masked : ndarray of bool, shape (ny, nx)
        Pixels masked in at least one band (mask bits or zero weight).
    n : int
        Number of sources.
    grow : int
        Largest number of 8-connected steps through masked unassigned pixels
        that join a masked pixel to a footprint.

    Returns
    -------
    FootprintStats
    """
    from scipy import ndimage

    seg = np.asarray(segmap)
    flat = seg.ravel()
    inseg = flat > 0
    labels = flat[inseg]
    pix_bits = np.asarray(bits).ravel()[inseg]
    pix_masked = np.asarray(masked).ravel()[inseg]
    npix = np.bincount(labels, minlength=n + 1).astype(np.int64)
    nbad = np.bincount(labels, weights=(pix_bits != 0), minlength=n + 1)
    anymask = np.bincount(labels, weights=pix_masked, minlength=n + 1) > 0
    defect = np.zeros(n + 1, dtype=np.uint16)
    present = int(np.bitwise_or.reduce(pix_bits)) if pix_bits.size else 0
    for k in range(16):  # one bincount per bit that occurs at all
        if present & (1 << k):
            has = np.bincount(labels, weights=(pix_bits & (1 << k)) != 0, minlength=n + 1)
            defect[has > 0] |= np.uint16(1 << k)

    # masked pixels outside every segment, next to one: grow each touched footprint
    free = np.asarray(masked) & (seg == 0)
    if free.any() and n:
        structure = np.ones((3, 3), dtype=bool)
        near = ndimage.binary_dilation(seg > 0, structure) & free
        touched = np.zeros(n + 1, dtype=bool)
        for dy, dx in _SHIFTS:
            f, s = _shifted_pairs(near, seg, dy, dx)
            touched[s[f]] = True
        boxes = ndimage.find_objects(seg, max_label=n)
        ny, nx = seg.shape
        for k in np.flatnonzero(touched[1:]) + 1:
            box = boxes[k - 1]
            if box is None:
                continue
            y0, y1 = max(0, box[0].start - grow), min(ny, box[0].stop + grow)
            x0, x1 = max(0, box[1].start - grow), min(nx, box[1].stop + grow)
            own = seg[y0:y1, x0:x1] == k
            cand = free[y0:y1, x0:x1]
            grown = ndimage.binary_dilation(own, structure, iterations=grow,
                                            mask=own | cand) & cand
            add = int(grown.sum())
            if add:
                b = np.asarray(bits[y0:y1, x0:x1])[grown]
                defect[k] |= np.bitwise_or.reduce(b.astype(np.uint16))
                npix[k] += add
                nbad[k] += float(np.count_nonzero(b)) if b.size else 0.0
                anymask[k] = True
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(npix > 0, nbad / np.maximum(npix, 1), 0.0)
    return FootprintStats(
        defect_bits=defect[1:],
        masked_frac=frac[1:].astype(np.float32),
        flag_masked=anymask[1:],
        npix=npix[1:],
    )
