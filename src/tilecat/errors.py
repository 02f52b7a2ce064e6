"""Typed error hierarchy.

Every error a user can cause names what is wrong and where: the tile, the file and
the problem, so a failed job in a 10^5-tile run can be found and fixed.
"""

from __future__ import annotations

__all__ = ["TilecatError", "ConfigError", "TileIdError", "InputError", "ModelError"]


class TilecatError(Exception):
    """Base class of all tilecat errors."""


class ConfigError(TilecatError):
    """The configuration is invalid (unknown key, wrong type, bad value)."""


class TileIdError(TilecatError):
    """A tile id does not match the allowed pattern."""


class InputError(TilecatError):
    """An input file of a tile is missing, unreadable or inconsistent.

    Parameters
    ----------
    tile : str
        Tile id.
    path : str
        The file at fault (or ``""`` when not one file).
    what : str
        What is wrong, in words.
    """

    def __init__(self, tile: str, path: str, what: str) -> None:
        self.tile = tile
        self.path = str(path)
        self.what = what
        where = f" file {self.path}" if self.path else ""
        super().__init__(f"tile {tile}:{where}: {what}")

    def __reduce__(self) -> tuple:
        # picklable with its three arguments (raised inside Dask distributed workers)
        return (type(self), (self.tile, self.path, self.what))


class ModelError(TilecatError):
    """A model's weights or card are missing, mismatched or corrupt."""
