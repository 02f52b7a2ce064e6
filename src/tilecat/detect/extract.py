"""Source extraction with deblending on the detection image (sep.extract).

A pixel belongs to a source when the detection image, convolved with the 3×3
SExtractor ``default.conv`` kernel (normalised to unit sum), is above ``thresh`` ×
the *unfiltered* noise of that pixel, in a connected group of at least ``minarea``
pixels: SExtractor's DETECT_THRESH semantics (sep ``filter_type='conv'``; the
``'matched'`` mode would instead threshold the filtered signal-to-noise, which
makes the same number mean a ~2.7× lower threshold for this kernel).
Groups are split by multi-threshold deblending (``deblend_nthresh`` levels, minimum
flux contrast ``deblend_cont``) and cleaned. Masked pixels count as data 0 with
infinite noise, so a masked defect is never detected.

Sources are returned in a deterministic order, by ``y`` then ``x`` of their
barycentre, numbered from 1; the segmentation map uses the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .background import as_sep_array

__all__ = ["DEFAULT_KERNEL", "Extraction", "extract_sources"]

#: SExtractor's default.conv: 3×3 pyramidal function, FWHM ~2 pixels.
DEFAULT_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])

_MIN_PIXSTACK = 300_000
_MAX_RETRIES = 4


@dataclass(frozen=True)
class Extraction:
    """Result of :func:`extract_sources`.

    Attributes
    ----------
    objects : structured ndarray, shape (n,)
        sep's object records (``x``, ``y`` 0-based barycentre in pixels with (0, 0)
        the centre of the first pixel; ``a``, ``b`` pixels; ``theta`` radians from
        +x towards +y; ``flag``; bounding box ``xmin``...; ``npix``...), sorted.
    segmap : ndarray of int32, shape (ny, nx)
        0 for background, k for the pixels of ``objects[k - 1]``.
    """

    objects: np.ndarray
    segmap: np.ndarray


def _configure_sep(pixstack: int, sub_objects: int) -> None:
    import sep

    sep.set_extract_pixstack(max(pixstack, _MIN_PIXSTACK))
    sep.set_sub_object_limit(sub_objects)


def extract_sources(
    data: np.ndarray,
    err: np.ndarray | float,
    mask: np.ndarray | None = None,
    thresh: float = 1.5,
    minarea: int = 5,
    deblend_nthresh: int = 32,
    deblend_cont: float = 0.005,
    filter_kernel: np.ndarray | None = DEFAULT_KERNEL,
) -> Extraction:
    """Detect and deblend sources.

    Parameters
    ----------
    data : ndarray, shape (ny, nx)
        Background-subtracted detection image (flux units).
    err : ndarray of shape (ny, nx) or float
        1-sigma noise of ``data`` per pixel (or one value for the whole image).
    mask : ndarray of bool, shape (ny, nx), optional
        True for pixels detection must ignore.
    thresh : float
        Detection threshold in units of ``err``.
    minarea : int
        Minimum number of pixels above threshold.
    deblend_nthresh : int
        Number of deblending levels.
    deblend_cont : float
        Minimum contrast for deblending (1.0 disables deblending).
    filter_kernel : ndarray or None
        Detection filter (None: no filtering).

    Returns
    -------
    Extraction
    """
    import sep

    data = as_sep_array(data)
    err_arg: np.ndarray | float = err if np.isscalar(err) else as_sep_array(err)
    mask_arg = None
    if mask is not None and np.any(mask):
        mask_arg = as_sep_array(mask, np.uint8)
    pixstack = max(_MIN_PIXSTACK, data.size // 8)
    sub_objects = 4096
    for attempt in range(_MAX_RETRIES + 1):
        _configure_sep(pixstack, sub_objects)
        try:
            objects, segmap = sep.extract(
                data,
                thresh,
                err=err_arg,
                mask=mask_arg,
                minarea=minarea,
                filter_kernel=filter_kernel,
                filter_type="conv",
                deblend_nthresh=deblend_nthresh,
                deblend_cont=deblend_cont,
                clean=True,
                clean_param=1.0,
                segmentation_map=True,
            )
            break
        except Exception as exc:  # sep raises plain Exception on buffer overflows
            msg = str(exc)
            if attempt == _MAX_RETRIES or not ("pixel buffer" in msg or "sub-object" in msg
                                               or "limit" in msg):
                raise
            pixstack *= 4
            sub_objects *= 4
    order = np.lexsort((objects["x"], objects["y"]))
    objects = objects[order]
    # renumber the map: old label order[k] + 1 becomes k + 1
    lut = np.zeros(len(order) + 1, dtype=np.int32)
    lut[order + 1] = np.arange(1, len(order) + 1, dtype=np.int32)
    segmap = lut[segmap]
    return Extraction(objects=objects, segmap=np.ascontiguousarray(segmap, dtype=np.int32))
