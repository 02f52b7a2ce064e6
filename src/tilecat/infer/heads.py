"""The head interface: what a model plugged into the inference engine declares.

A *head* is one trained model that reads the tile's cutouts and writes columns of
``infer.parquet``. The engine (:mod:`tilecat.infer.engine`) knows nothing about any
particular head: it loads each configured head, streams the stamps through every
loaded module in one pass, then hands each head its raw outputs to turn into named
columns. A new head (photo-z, VAE latents, ...) plugs in by subclassing :class:`Head`
and registering it (:mod:`tilecat.infer.registry`), never by editing the engine.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Column", "LoadedHead", "Head", "RawOutput", "model_location"]

#: What a head's module returns for a batch, moved to the host as float32 numpy:
#: one array ``(N, ...)`` or a mapping name -> array ``(N, ...)``.
RawOutput = Union[np.ndarray, dict[str, np.ndarray]]


def model_location(config: Mapping[str, Any], name: str) -> str:
    """Where head ``name``'s model lives: ``infer.model_dirs[name]`` or the shipped name.

    The result goes to :func:`tilecat.models.load_model` (a directory or a name of
    ``tilecat/data/models/<name>/``).
    """
    dirs = (config.get("infer") or {}).get("model_dirs") or {}
    return str(dirs.get(name, name))


@dataclass(frozen=True)
class Column:
    """One output column of a head.

    Attributes
    ----------
    name : str
        Column name in ``infer.parquet`` (probabilities end in ``_raw``).
    dtype : str
        pyarrow type name (``float32``, ``float64``, ``int64``, ...) or
        ``list<float32>`` / ``fixed_size_list<float32,K>`` for vector columns.
    unit : str
        Physical unit (astropy-parsable, ``""`` for dimensionless).
    description : str
        One sentence for the Parquet schema metadata.
    """

    name: str
    dtype: str = "float32"
    unit: str = ""
    description: str = ""


@dataclass
class LoadedHead:
    """A head ready to run: its torch module on the device and its model card.

    Attributes
    ----------
    module : torch.nn.Module
        Maps a float32 batch ``(N, n_band, size, size)`` (arcsinh-normalised stamps,
        channels_last on CPU) to a tensor ``(N, ...)`` or a dict of such tensors.
        Any test-time augmentation (e.g. the spin-symmetrised mirror average of the
        morphology head) lives inside the module. A head listing ``inputs`` gets
        those per-object variables of the cutouts as further arguments,
        ``module(stamps, *inputs)``.
    card : dict
        The model card (JSON) of the weights.
    columns : tuple of Column
        The columns this head writes (may depend on the card, e.g. a bin grid).
    inputs : tuple of str
        Per-object inputs the module takes after the stamps, in order: variables
        of the cutouts store (e.g. ``"sigma"``) or ones the engine provides
        (``"psf_fwhm"``: float32 ``(N, n_band)`` in arcsec, from the tile store's
        ``psf_fwhm`` attribute, when the cutouts do not hold it).
    extra : dict
        Anything the head's postprocess needs (e.g. the pixel scale).
    """

    module: "torch.nn.Module"
    card: dict[str, Any]
    columns: tuple[Column, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    #: per-object cutout variables besides the stamps that the module takes as extra
    #: positional inputs, in order (e.g. ``("sigma",)``: float32 ``(N, n_band)``)
    inputs: tuple[str, ...] = ()


class Head(abc.ABC):
    """Base class of inference heads.

    Subclasses set :attr:`name` and implement :meth:`load` and :meth:`postprocess`.
    """

    #: registry name, as written in ``infer.models``
    name: str = ""

    @abc.abstractmethod
    def load(self, config: Mapping[str, Any], device: "torch.device") -> LoadedHead:
        """Load weights + card (checksum verified) and build the module on ``device``.

        Raises
        ------
        ModelError
            Weights or card missing, corrupt, or not matching each other.
        """

    @abc.abstractmethod
    def postprocess(self, raw: RawOutput, loaded: LoadedHead) -> dict[str, np.ndarray]:
        """Turn the raw outputs of all objects into columns.

        Parameters
        ----------
        raw : ndarray or dict of ndarray
            The module outputs of every object, in input order, float32 ``(N, ...)``.
        loaded : LoadedHead
            The loaded head (its card gives class lists, bin grids, ...).

        Returns
        -------
        dict
            Column name -> array of length N, exactly the names of ``loaded.columns``.
        """

    def file_metadata(self, loaded: LoadedHead) -> dict[str, Any]:
        """Extra ``infer.parquet`` file-metadata entries (key -> str/bytes/JSON-able value).

        Default: none. The photo-z head writes its bin grid (``tilecat.z_grid``) here.
        """
        return {}

    def output_index(self, loaded: LoadedHead, answer: str) -> int:
        """Index in the module's raw output ``(N, K)`` of the output named ``answer``.

        Used by Grad-CAM (:mod:`tilecat.explain`). The default assumes one raw output
        per column, in column order, and accepts a full column name
        (``morph_spin_S_raw``) or its middle part (``spin_S``).

        Raises
        ------
        ModelError
            No (or more than one) output matches.
        """
        names = [c.name for c in loaded.columns]
        if answer in names:
            return names.index(answer)
        hits = [k for k, n in enumerate(names)
                if n.split("_", 1)[-1].rsplit("_", 1)[0] == answer]
        if len(hits) != 1:
            raise ModelError(f"model {self.name!r}: no single output named {answer!r}; "
                             f"outputs: {names}")
        return hits[0]

    def check_input(self, loaded: LoadedHead, bands: Sequence[str], size: int) -> None:
        """Refuse cutouts whose bands or stamp size differ from what the model was trained on.

        The card's ``input`` section gives ``bands`` (ordered) and ``stamp_size``.
        """
        spec = loaded.card.get("input", {})
        want_bands = list(spec.get("bands", []))
        if want_bands and want_bands != list(bands):
            raise ModelError(
                f"model {self.name!r} was trained on bands {want_bands} but the cutouts "
                f"have bands {list(bands)}"
            )
        want_size = spec.get("stamp_size")
        if want_size is not None and int(want_size) != int(size):
            raise ModelError(
                f"model {self.name!r} expects {want_size}x{want_size} stamps but the cutouts "
                f"are {size}x{size}"
            )
