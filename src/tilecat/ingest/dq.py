"""Data-quality remapping: a survey's DQ plane -> tilecat uint16 bits (``tilecat.bits``).

Three input kinds (config ``survey.files.dq.kind``):

``bits``
    The values are tilecat bits already (0..65535); copied.
``codes``
    Each pixel holds one integer code (0 = good). ``map`` gives code -> tilecat bit
    name, e.g. the DECam community pipeline: ``{1: bad, 3: saturated, 4: bleed,
    5: cosmic_ray, 8: trail}``. A non-zero code the map does not name sets ``bad``
    (a code means *something* is wrong with the pixel).
``bitmask``
    Input bit k set -> the tilecat bit ``map[k]``. Unmapped input bits are ignored
    (survey masks carry informational bits such as "detected").

The rule bits (``nodata``) are applied after remapping, in :mod:`.blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bits import BITS, bit, names_from_mask
from ..errors import ConfigError, InputError

__all__ = ["DQRemap", "make_remap", "describe", "DQ_KINDS"]

DQ_KINDS: tuple[str, ...] = ("bits", "codes", "bitmask")


@dataclass(frozen=True)
class DQRemap:
    """How one DQ plane maps to tilecat bits.

    Attributes
    ----------
    kind : str
        ``bits``, ``codes`` or ``bitmask``.
    pairs : tuple of (int, int)
        (input code or input bit number, tilecat bit value ``1 << k``).
    """

    kind: str
    pairs: tuple[tuple[int, int], ...] = ()

    def max_input_bit(self) -> int:
        """Highest input bit number a ``bitmask`` map uses (-1 if none)."""
        return max((k for k, _ in self.pairs), default=-1) if self.kind == "bitmask" else -1

    def __call__(self, raw: np.ndarray, tile: str, path: str) -> np.ndarray:
        """Remap a block.

        Parameters
        ----------
        raw : ndarray of int, shape (ny, nx)
            The input DQ values (native byte order).
        tile, path : str
            For error messages.

        Returns
        -------
        ndarray of uint16, shape (ny, nx)
            For ``bits`` on 16-bit input, a view of ``raw`` (no copy).
        """
        if raw.dtype.kind not in "iub":
            raise InputError(tile, path, f"DQ plane has non-integer dtype {raw.dtype}")
        if self.kind == "bits":
            if raw.size and (raw.dtype.kind == "i" and int(raw.min()) < 0
                             or int(raw.max()) > 0xFFFF):
                raise InputError(
                    tile, path, f"DQ kind 'bits' but values span [{int(raw.min())}, "
                    f"{int(raw.max())}], outside uint16"
                )
            if raw.dtype.itemsize == 2:  # (u)int16 >= 0 has uint16's bit pattern: no copy
                return raw.view(np.uint16)
            return raw.astype(np.uint16)
        out = np.zeros(raw.shape, dtype=np.uint16)
        if self.kind == "codes":
            nonzero = raw != 0
            if not nonzero.any():
                return out
            out[nonzero] = bit("bad")
            for code, value in self.pairs:
                out[raw == code] = value
            return out
        # bitmask
        unsigned = raw.view(np.dtype(f"u{raw.dtype.itemsize}")) if raw.dtype.kind == "i" else raw
        for k, value in self.pairs:
            hit = (unsigned & unsigned.dtype.type(1 << k)) != 0
            out[hit] |= np.uint16(value)
        return out


def make_remap(kind: str, mapping: dict[str, str] | None, key: str = "survey.files.dq") -> DQRemap:
    """Validate a DQ ``kind``/``map`` from the configuration and build its remapper.

    Parameters
    ----------
    kind : str
        One of :data:`DQ_KINDS`.
    mapping : dict of str to str
        Input code / bit number (as a string or int) -> tilecat bit name.
    key : str
        Config key path, for error messages.

    Raises
    ------
    ConfigError
        Unknown kind, a key that is not an integer, an unknown bit name, code 0, a
        bit number outside 0..63, or a missing map for ``codes``/``bitmask``.
    """
    if kind not in DQ_KINDS:
        raise ConfigError(f"key '{key}.kind': {kind!r} is not one of {list(DQ_KINDS)}")
    mapping = dict(mapping or {})
    if kind == "bits":
        return DQRemap("bits")
    if not mapping:
        raise ConfigError(f"key '{key}.map': DQ kind {kind!r} needs a map to tilecat bits")
    pairs: list[tuple[int, int]] = []
    for k, name in mapping.items():
        try:
            code = int(str(k).strip())
        except ValueError as exc:
            raise ConfigError(f"key '{key}.map.{k}': {k!r} is not an integer") from exc
        if str(name) not in BITS:
            raise ConfigError(
                f"key '{key}.map.{k}': unknown tilecat bit {name!r}; known: {sorted(BITS)}"
            )
        if kind == "codes" and code == 0:
            raise ConfigError(f"key '{key}.map.{k}': code 0 means a good pixel")
        if kind == "bitmask" and not 0 <= code < 64:
            raise ConfigError(f"key '{key}.map.{k}': input bit {code} is outside 0..63")
        pairs.append((code, bit(str(name))))
    return DQRemap(kind, tuple(sorted(pairs)))


def describe(remap: DQRemap | None) -> dict[str, Any]:
    """JSON-ready description of a remap for the store's attributes."""
    if remap is None:
        return {"kind": "none"}
    return {"kind": remap.kind, "map": {str(k): names_from_mask(v)[0] for k, v in remap.pairs}}
