"""Open one image plane of a FITS file and read blocks of it.

Handles plain ``.fits``, tile-compressed ``.fits.fz`` (``CompImageHDU``) and whole-file
compressed ``.fits.gz`` / ``.fits.bz2`` (astropy opens them all), multi-extension files,
HDU selection by index or EXTNAME (default: the first HDU holding an image), and
big-endian on-disk data (every block comes back in native byte order).

Blocks of plain and tile-compressed files are read with astropy's ``section`` (only the
bytes / compressed tiles the block needs). Whole-file compressed streams cannot be
read in pieces, so each plane is decompressed once per process and kept in a small
byte-bounded cache that every block of the plane slices.
"""

from __future__ import annotations

import mmap
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = [
    "Plane",
    "inspect_plane",
    "read_block",
    "stream_compression",
    "clear_cache",
    "CACHE_BYTES",
]

#: Magic bytes of whole-file compression formats astropy opens transparently.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"PK\x03\x04", "zip"),
    (b"\xfd7zXZ\x00", "xz"),
)

#: Upper bound (bytes) of decompressed whole-file-compressed planes kept per process.
CACHE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Plane:
    """A resolved 2-d image plane: everything a worker needs to read blocks of it.

    Attributes
    ----------
    path : Path
        The FITS file.
    hdu : int
        Index of the HDU in the file.
    name : str
        EXTNAME of the HDU (for messages).
    shape : tuple of int
        ``(ny, nx)`` in pixels (FITS ``NAXIS2``, ``NAXIS1``).
    lead : int
        Number of leading length-1 axes the HDU has beyond the two image axes.
    dtype : str
        Native-byte-order numpy dtype of the data after BSCALE/BZERO.
    stream : str or None
        Whole-file compression (``gzip``, ``bzip2``, ...) or None.
    stamp : tuple of int
        ``(size, mtime_ns)`` of the file when inspected (cache key).
    """

    path: Path
    hdu: int
    name: str
    shape: tuple[int, int]
    lead: int
    dtype: str
    stream: str | None
    stamp: tuple[int, int]

    @property
    def label(self) -> str:
        """``path[HDU]`` for messages and provenance."""
        return f"{self.path}[{self.hdu}:{self.name}]" if self.name else f"{self.path}[{self.hdu}]"


def stream_compression(path: Path) -> str | None:
    """Whole-file compression of ``path`` from its magic bytes, or None."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _image_shape(hdu: Any) -> tuple[int, ...] | None:
    """Array shape of an image HDU from its header (no data read), else None."""
    from astropy.io.fits import CompImageHDU, ImageHDU, PrimaryHDU

    if not isinstance(hdu, PrimaryHDU | ImageHDU | CompImageHDU):
        return None
    hdr = hdu.header
    naxis = int(hdr.get("NAXIS", 0))
    if naxis < 2:
        return None
    shape = tuple(int(hdr.get(f"NAXIS{k}", 0)) for k in range(naxis, 0, -1))
    if any(n <= 0 for n in shape):
        return None
    return shape


def _truncation(caught: list[warnings.WarningMessage]) -> str:
    """The first astropy warning about a truncated file, or ``""``."""
    for w in caught:
        if "truncat" in str(w.message).lower():
            return str(w.message)
    return ""


def _names(hdul: Any) -> str:
    return ", ".join(f"{i}:{h.name or '-'}" for i, h in enumerate(hdul))


def _select(hdul: Any, spec: int | str | None, tile: str, path: Path) -> int:
    """Index of the HDU ``spec`` names (index, EXTNAME or None = first image)."""
    n = len(hdul)
    if spec is None:
        for i, h in enumerate(hdul):
            if _image_shape(h) is not None:
                return i
        raise InputError(tile, str(path), f"no HDU holds image data (HDUs: {_names(hdul)})")
    if isinstance(spec, bool):
        raise InputError(tile, str(path), f"HDU selector {spec!r} is not an index or EXTNAME")
    if isinstance(spec, int):
        if not -n <= spec < n:
            raise InputError(
                tile, str(path), f"HDU index {spec} out of range: the file has {n} HDU(s) "
                f"({_names(hdul)})"
            )
        idx = spec % n
    else:
        want = str(spec).strip().upper()
        matches = [i for i, h in enumerate(hdul) if str(h.name).strip().upper() == want]
        if not matches:
            raise InputError(
                tile, str(path), f"no HDU named {spec!r} (HDUs: {_names(hdul)})"
            )
        idx = matches[0]
    if _image_shape(hdul[idx]) is None:
        raise InputError(
            tile, str(path), f"HDU {spec!r} ({idx}:{hdul[idx].name}) holds no image data "
            f"(HDUs: {_names(hdul)})"
        )
    return idx


def inspect_plane(
    path: str | Path, hdu: int | str | None, tile: str, role: str
) -> tuple[Plane, Any, Any]:
    """Check that ``path[hdu]`` is a readable 2-d image and describe it.

    Reads headers only, except for whole-file compressed files, which are decompressed
    here once (into the per-process cache) because that is the only way to know they
    are complete.

    Parameters
    ----------
    path : str or Path
        FITS file.
    hdu : int, str or None
        HDU index, EXTNAME, or None for the first HDU holding an image.
    tile : str
        Tile id (for error messages).
    role : str
        ``image``, ``weight`` or ``dq`` (for error messages).

    Returns
    -------
    plane : Plane
    header : astropy.io.fits.Header
        The selected HDU's header (for compressed HDUs, the image header).
    primary : astropy.io.fits.Header
        The primary header (for keywords inherited by extensions).

    Raises
    ------
    InputError
        Missing, unreadable, not FITS, truncated, wrong HDU, not a 2-d image.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.exists():
        raise InputError(tile, str(path), f"{role} file does not exist")
    if not path.is_file():
        raise InputError(tile, str(path), f"{role} path is not a regular file")
    try:
        st = path.stat()
        stream = stream_compression(path)
    except OSError as exc:
        raise InputError(tile, str(path), f"{role} file is not readable: {exc}") from exc
    if st.st_size == 0:
        raise InputError(tile, str(path), f"{role} file is empty")
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            memmap = None if stream is None else False
            with fits.open(path, memmap=memmap, lazy_load_hdus=True) as hdul:
                try:
                    idx = _select(hdul, hdu, tile, path)
                except InputError as exc:
                    if _truncation(caught):
                        raise InputError(
                            tile, str(path), f"{role} file is truncated ({_truncation(caught)})"
                        ) from exc
                    raise
                h = hdul[idx]
                shape = _image_shape(h)
                assert shape is not None
                header = h.header.copy()
                primary = hdul[0].header.copy()
                name = str(h.name or "").strip()
                if stream is None:
                    info = h.fileinfo()
                    end = int(info["datLoc"]) + int(info["datSpan"])
                    if end > st.st_size:
                        raise InputError(
                            tile, str(path), f"{role} file is truncated: HDU {idx} needs "
                            f"{end} bytes, the file has {st.st_size}"
                        )
                    probe_index = (0,) * (len(shape) - 2) + (slice(0, 1), slice(0, 1))
                    probe = _probe(lambda: np.asarray(h.section[probe_index]), tile, path,
                                   role, idx)
    except InputError:
        raise
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, ...
        what = "truncated" if _truncation(caught) else "not a readable FITS file"
        raise InputError(tile, str(path), f"{role} file is {what}: {exc}") from exc
    lead = len(shape) - 2
    if any(n != 1 for n in shape[:lead]):
        raise InputError(
            tile, str(path), f"{role} HDU {idx} has shape {shape}, not a 2-d image"
        )
    plane = Plane(
        path=path, hdu=idx, name=name, shape=(shape[-2], shape[-1]), lead=lead,
        dtype="", stream=stream, stamp=(st.st_size, st.st_mtime_ns),
    )
    if stream is not None:  # decompresses the whole plane into the cache
        probe = _probe(lambda: _read(plane, slice(0, 1), slice(0, 1)), tile, path, role, idx)
    dtype = probe.dtype.newbyteorder("=").str
    return Plane(**{**plane.__dict__, "dtype": dtype}), header, primary


def _probe(read: Any, tile: str, path: Path, role: str, idx: int) -> np.ndarray:
    """Run ``read()`` (a one-pixel read), turning failures into an InputError."""
    try:
        return read()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            tile, str(path), f"{role} data of HDU {idx} cannot be read (truncated or "
            f"corrupt): {exc}"
        ) from exc


def read_block(plane: Plane, ys: slice, xs: slice) -> np.ndarray:
    """Pixels ``[ys, xs]`` of ``plane`` as a new native-byte-order array.

    Parameters
    ----------
    plane : Plane
    ys, xs : slice
        Rows and columns (0-based, FITS ``NAXIS2`` and ``NAXIS1`` axes).

    Returns
    -------
    ndarray, shape (len(ys), len(xs)), dtype ``plane.dtype``
        Owned (never a view of a file mapping or of the cache).
    """
    arr = _read(plane, ys, xs)
    out = arr.astype(np.dtype(plane.dtype) if plane.dtype else arr.dtype.newbyteorder("="),
                     copy=False)
    if out is arr and (plane.stream is not None or _file_backed(arr)):
        out = arr.copy()  # never hand out the cache or a file mapping
    return out


def _file_backed(arr: np.ndarray) -> bool:
    """True when ``arr`` is a view into a memory-mapped file."""
    base: Any = arr
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def _read(plane: Plane, ys: slice, xs: slice) -> np.ndarray:
    from astropy.io import fits

    index = (0,) * plane.lead + (ys, xs)
    if plane.stream is not None:
        return _CACHE.get(plane)[index]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(plane.path, lazy_load_hdus=True) as hdul:
            hdu = hdul[plane.hdu]
            if isinstance(hdu, fits.CompImageHDU):  # decompresses only the tiles needed
                return np.asarray(hdu.section[index])
            # uncompressed: astropy reads a partial-width section row by row; whole rows
            # are one contiguous (memory-mapped) read, the columns are then a view
            rows = np.asarray(hdu.section[(0,) * plane.lead + (ys,)])
            return rows[:, xs]


class _PlaneCache:
    """Per-process LRU of fully decompressed planes, bounded by bytes, thread-safe.

    Each plane is decompressed once even when many threads ask for it at once.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}
        self._data: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def get(self, plane: Plane) -> np.ndarray:
        key = (str(plane.path), plane.hdu, plane.stamp)
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            klock = self._loading.setdefault(key, threading.Lock())
        with klock:
            with self._lock:
                if key in self._data:
                    return self._data[key]
            arr = self._load(plane)
            with self._lock:
                self._data[key] = arr
                self._loading.pop(key, None)
                total = sum(a.nbytes for a in self._data.values())
                while total > self.budget and len(self._data) > 1:
                    _, old = self._data.popitem(last=False)
                    total -= old.nbytes
            return arr

    @staticmethod
    def _load(plane: Plane) -> np.ndarray:
        from astropy.io import fits

        if (os.path.getsize(plane.path), os.stat(plane.path).st_mtime_ns) != plane.stamp:
            raise OSError(f"{plane.path} changed while being read")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(plane.path, memmap=False, lazy_load_hdus=True) as hdul:
                data = hdul[plane.hdu].data
                if data is None:
                    raise OSError(f"{plane.path}: HDU {plane.hdu} has no data")
                arr = np.asarray(data)
        expected = (1,) * plane.lead + plane.shape
        if arr.shape != expected:
            raise OSError(f"{plane.path}: data shape {arr.shape}, header says {expected}")
        arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        arr.setflags(write=False)
        return arr

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_CACHE = _PlaneCache(CACHE_BYTES)


def clear_cache() -> None:
    """Drop every cached decompressed plane of this process."""
    _CACHE.clear()
