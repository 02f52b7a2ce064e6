"""The software a release was built with: Python, platform, installed packages."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

__all__ = ["environment", "KEY_PACKAGES"]

#: Packages whose versions decide the catalog bytes; :func:`tilecat.release.verify`
#: reports a difference in these.
KEY_PACKAGES: tuple[str, ...] = (
    "tilecat", "numpy", "scipy", "astropy", "sep", "galsim", "dask", "distributed",
    "zarr", "numcodecs", "xarray", "pyarrow", "pandas", "torch", "safetensors",
    "scikit-learn", "snakemake", "hats", "lsdb",
)


def _packages() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[name.lower().replace("_", "-")] = dist.version
    return dict(sorted(out.items()))


def environment() -> dict[str, Any]:
    """Python version, implementation, platform and every installed package's version.

    Returns
    -------
    dict
        ``python``, ``implementation``, ``platform`` (OS and machine, no host name),
        ``packages`` (name -> version, sorted by name).
    """
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": f"{platform.system()}-{platform.machine()}",
        "packages": _packages(),
    }
