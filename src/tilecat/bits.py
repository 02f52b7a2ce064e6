"""Pixel data-quality and defect bits (uint16), shared by every stage.

Bit k of ``dq`` / ``defect_mask`` means defect class k. The first seven are the
classes the masking CNN predicts (after MaxiMask, Paillassa et al. 2020); the rest
are set by rule only.
"""

from __future__ import annotations

__all__ = [
    "DEFECT_CLASSES",
    "RULE_BITS",
    "BITS",
    "bit",
    "names_from_mask",
]

#: Classes predicted per pixel by the masker, in bit order (bits 0..6).
DEFECT_CLASSES: tuple[str, ...] = (
    "cosmic_ray",
    "hot",
    "dead",
    "trail",
    "saturated",
    "bleed",
    "persistence",
)

#: Bits set by rule, never by a network.
RULE_BITS: tuple[str, ...] = (
    "nodata",  # bit 7: weight == 0 or non-finite pixel
    "bad",  # bit 8: generic upstream bad pixel (static bad-pixel map)
    "interpolated",  # bit 9: pixel interpolated upstream
)

#: Name -> bit number for every known bit.
BITS: dict[str, int] = {name: i for i, name in enumerate(DEFECT_CLASSES + RULE_BITS)}


def bit(name: str) -> int:
    """Return the uint16 value (``1 << k``) of the named bit.

    Parameters
    ----------
    name : str
        One of ``BITS``.

    Returns
    -------
    int
        The bit value.
    """
    try:
        return 1 << BITS[name]
    except KeyError as exc:
        raise KeyError(f"unknown defect bit {name!r}; known: {sorted(BITS)}") from exc


def names_from_mask(value: int) -> list[str]:
    """Names of the bits set in ``value``, in bit order."""
    return [n for n, k in BITS.items() if value & (1 << k)]
