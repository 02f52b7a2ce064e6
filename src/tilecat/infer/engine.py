"""The inference engine: every configured head over a tile's cutouts, in one pass.

``run_infer(config, tile)`` reads ``cutouts.zarr`` once (chunk-aligned blocks), runs
the stamps through every head listed in ``infer.models`` in batches of
``infer.batch_size`` and writes the raw outputs per object to ``infer.parquet``
(atomically), one row per object sorted by ``object_id``.

Device handling: on CUDA the batches go through pinned host memory with fp16
autocast; on CPU the batch is channels_last and runs under ``torch.inference_mode``.
Outputs do not depend on the batch size, bit for bit, provided the head's module is
batch-invariant: on CPU, oneDNN convolutions give the same per-object result for any
batch of two or more (a batch of one takes other kernels, so the engine pads it to
two), and fully-connected layers must be :class:`~tilecat.infer.layers.BatchInvariantLinear`
(BLAS gemm/gemv change the summation order with the row count). On CUDA with
autocast the outputs are reproducible for a fixed batch size only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .cutouts import Cutouts, open_cutouts
from .heads import Column, Head, LoadedHead, RawOutput
from .registry import get_head

__all__ = ["run_infer", "infer_arrays", "build_table", "write_infer", "tile_psf_fwhm",
           "tile_psf_beta", "KNOWN_INPUTS"]

#: per-object inputs the engine can give a head besides the stamps: ``psf_fwhm``
#: (arcsec, from ``tile.zarr``) and ``psf_beta`` (Moffat beta, from ``cutouts.zarr``),
#: float32 ``(N, n_band)``, one value per band broadcast over the objects
KNOWN_INPUTS: tuple[str, ...] = ("psf_fwhm", "psf_beta")

OBJECT_ID = Column("object_id", "int64", "", "object id: tile index * 1e6 + source number")


def _to_host(out: Any) -> RawOutput:
    """Module output (tensor or dict of tensors) -> float32 numpy on the host."""
    if isinstance(out, Mapping):
        return {str(k): v.detach().float().cpu().numpy() for k, v in out.items()}
    return out.detach().float().cpu().numpy()


def _concat(parts: list[RawOutput]) -> RawOutput:
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}  # type: ignore[index]
    return np.concatenate(parts, axis=0)  # type: ignore[arg-type]


def tile_psf_fwhm(config: Mapping[str, Any], tile: str, bands: Sequence[str]) -> np.ndarray:
    """PSF FWHM per band of ``tile`` [arcsec], from ``tile.zarr``'s ``psf_fwhm`` attribute.

    Returns
    -------
    ndarray of float32, shape (n_band,)

    Raises
    ------
    InputError
        The tile store or the PSF FWHM of a band is missing.
    """
    from ..errors import InputError
    from ..store import read_attrs
    from ..survey import tile_paths

    store = tile_paths(dict(config), tile)["store"]
    try:
        attrs = read_attrs(store)
    except OSError as exc:
        raise InputError(tile, str(store),
                         f"cannot read the PSF FWHM from the tile store attributes: {exc}"
                         ) from exc
    psf = attrs.get("psf_fwhm") or {}
    missing = [b for b in bands if not psf.get(b)]
    if missing:
        raise InputError(tile, str(store), f"PSF FWHM of band(s) {missing} unknown (attribute "
                         "'psf_fwhm', from the PSFFWHM header); the structure model needs it")
    return np.array([float(psf[b]) for b in bands], dtype=np.float32)


def tile_psf_beta(cutouts: Cutouts, tile: str) -> np.ndarray:
    """Moffat beta of the PSF per band of ``tile`` (dimensionless), measured on its stars.

    From the ``psf`` attribute of ``cutouts.zarr``, written by the detect stage
    (:mod:`tilecat.detect.psf`; the configured default beta for a band with too few
    stars).

    Parameters
    ----------
    cutouts : Cutouts
        The tile's opened cutouts store.
    tile : str
        Tile id (messages).

    Returns
    -------
    ndarray of float32, shape (n_band,)
        In the order of ``cutouts.bands``.

    Raises
    ------
    InputError
        The attribute, or the beta of a band, is missing or not a positive number.
    """
    from ..errors import InputError

    psf = cutouts.attrs.get("psf")
    if not isinstance(psf, Mapping):
        raise InputError(tile, str(cutouts.path), "no 'psf' attribute (the Moffat PSF per "
                         "band the detect stage measures); re-run detect for this tile")
    values, missing = [], []
    for b in cutouts.bands:
        entry = psf.get(b)
        beta = entry.get("beta") if isinstance(entry, Mapping) else None
        if isinstance(beta, bool) or not isinstance(beta, int | float) \
                or not np.isfinite(beta) or beta <= 0:
            missing.append(b)
        else:
            values.append(float(beta))
    if missing:
        raise InputError(tile, str(cutouts.path), f"PSF beta of band(s) {missing} missing "
                         "from the 'psf' attribute; re-run detect for this tile")
    return np.array(values, dtype=np.float32)


def infer_arrays(
    cutouts: Cutouts,
    loaded: Sequence[LoadedHead],
    batch_size: int,
    device: "Any",
    *,
    amp: bool = True,
    context: Mapping[str, np.ndarray] | None = None,
) -> list[RawOutput]:
    """Run every loaded head over all stamps; one pass over the store.

    Parameters
    ----------
    cutouts : Cutouts
        The opened store.
    loaded : sequence of LoadedHead
        Modules already on ``device``, in eval mode.
    batch_size : int
        Objects per forward pass.
    device : torch.device
        Where the modules are.
    amp : bool
        fp16 autocast on CUDA (ignored on CPU).
    context : dict, optional
        Engine-provided per-object inputs by name (``(N, ...)`` arrays in store
        order, e.g. ``psf_fwhm``, ``psf_beta``); other inputs are read from the
        cutouts store.

    Returns
    -------
    list
        Per head, its raw outputs for all objects in store order (float32, ``(N, ...)``).
    """
    import torch

    from ..models import autocast

    if not loaded:
        return []
    cuda = device.type == "cuda"
    parts: list[list[RawOutput]] = [[] for _ in loaded]
    names = sorted({v for lh in loaded for v in lh.inputs})  # extra per-object inputs
    context = dict(context or {})

    def read(v: str, start: int, stop: int) -> np.ndarray:
        if v in context:
            return np.ascontiguousarray(context[v][start:stop], dtype=np.float32)
        return cutouts.read(v, start, stop)

    with torch.inference_mode():
        for start, block in cutouts.blocks(batch_size):
            host = torch.from_numpy(block)
            extra = {v: torch.from_numpy(read(v, start, start + block.shape[0]))
                     for v in names}
            if cuda:
                host = host.pin_memory()
            for i in range(0, host.shape[0], batch_size):
                x = host[i:i + batch_size]
                ex = {v: t[i:i + batch_size] for v, t in extra.items()}
                single = x.shape[0] == 1
                if single:  # oneDNN runs a batch of 1 through other kernels: pad to 2
                    x = x.expand(2, -1, -1, -1)
                    ex = {v: t.expand(2, *t.shape[1:]) for v, t in ex.items()}
                x = x.to(device, non_blocking=cuda)
                ex = {v: t.to(device) for v, t in ex.items()}
                if not cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(device, enabled=amp):
                    for k, lh in enumerate(loaded):
                        out = _to_host(lh.module(x, *[ex[v] for v in lh.inputs]))
                        if single:
                            out = ({n: v[:1] for n, v in out.items()} if isinstance(out, dict)
                                   else out[:1])
                        parts[k].append(out)
    if len(cutouts) == 0:  # no objects: one dummy pass gives the output shapes
        x = torch.zeros((1, len(cutouts.bands), cutouts.size, cutouts.size), device=device)
        ex = {v: torch.ones((1,) + read(v, 0, 0).shape[1:], device=device) for v in names}
        with torch.inference_mode(), autocast(device, enabled=amp):
            for k, lh in enumerate(loaded):
                out = _to_host(lh.module(x, *[ex[v] for v in lh.inputs]))
                parts[k].append({n: v[:0] for n, v in out.items()} if isinstance(out, dict)
                                else out[:0])
    return [_concat(p) for p in parts]


def build_table(
    object_id: np.ndarray,
    heads: Sequence[Head],
    loaded: Sequence[LoadedHead],
    raws: Sequence[RawOutput],
) -> "Any":
    """Assemble the ``infer.parquet`` table (sorted by object_id) with metadata.

    Raises
    ------
    ModelError
        A head's postprocess returned columns other than it declared, or wrong lengths.
    """
    import pyarrow as pa

    order = np.argsort(object_id, kind="stable")
    columns: list[Column] = [OBJECT_ID]
    arrays: list[pa.Array] = [pa.array(object_id[order], type=pa.int64())]
    models_meta = []
    file_meta: dict[str, Any] = {}
    for head, lh, raw in zip(heads, loaded, raws):
        out = head.postprocess(raw, lh)
        file_meta.update(head.file_metadata(lh))
        want = [c.name for c in lh.columns]
        if sorted(out) != sorted(want):
            raise ModelError(
                f"model {head.name!r}: postprocess gave columns {sorted(out)}, "
                f"declared {sorted(want)}"
            )
        for col in lh.columns:
            values = np.asarray(out[col.name])
            if values.shape[0] != object_id.shape[0]:
                raise ModelError(f"model {head.name!r}: column {col.name} has "
                                 f"{values.shape[0]} rows for {object_id.shape[0]} objects")
            columns.append(col)
            arrays.append(_arrow_column(values[order], col.dtype))
        models_meta.append({
            "name": head.name,
            "version": lh.card.get("version"),
            "sha256": lh.card.get("sha256"),
        })
    schema = pa.schema([pa.field(c.name, a.type) for c, a in zip(columns, arrays)])
    table = pa.Table.from_arrays(arrays, schema=schema)
    from ..parquetmeta import with_metadata

    return with_metadata(table, units={c.name: c.unit for c in columns},
                         descriptions={c.name: c.description for c in columns},
                         extra={**file_meta, "tilecat.models": models_meta})


def _arrow_column(values: np.ndarray, dtype: str) -> "Any":
    import pyarrow as pa

    if dtype.startswith("fixed_size_list<"):
        inner, size = dtype[len("fixed_size_list<"):-1].split(",")
        flat = pa.array(values.reshape(-1).astype(inner.strip()))
        return pa.FixedSizeListArray.from_arrays(flat, int(size))
    if dtype.startswith("list<"):
        inner = dtype[len("list<"):-1]
        return pa.array(list(values.astype(inner)), type=pa.list_(pa.type_for_alias(inner)))
    return pa.array(values.astype(dtype), type=pa.type_for_alias(dtype))


def write_infer(table: "Any", path: str | Path) -> None:
    """Write ``table`` to ``path`` atomically (pyarrow, zstd, deterministic bytes)."""
    from ..parquetmeta import write_table

    write_table(table, path)


def run_infer(config: Mapping[str, Any], tile: str) -> None:
    """Run every model of ``infer.models`` over ``tile``'s cutouts -> ``infer.parquet``.

    Parameters
    ----------
    config : dict
        Validated configuration. Keys used: ``infer.models`` (list of head names,
        ``[]`` writes object_id only), ``infer.batch_size``, ``infer.device``
        (auto/cpu/cuda[:N]), ``infer.gpu`` (true: refuse to run without a GPU),
        ``infer.threads`` (CPU threads, null = torch default), ``infer.model_dirs``
        (optional name -> model directory overrides of the shipped weights).
    tile : str
        Tile id.

    Raises
    ------
    InputError
        Cutouts missing or malformed.
    ModelError
        Weights/card missing or mismatched, or a model that does not fit the cutouts.
    ConfigError
        Unknown model name, unavailable device.
    """
    from ..survey import tile_paths

    paths = tile_paths(dict(config), tile)
    icfg = dict(config.get("infer") or {})
    names = list(icfg.get("models") or [])
    batch_size = int(icfg.get("batch_size", 256))
    cutouts = open_cutouts(paths["cutouts"], tile)

    heads = [get_head(n) for n in names]
    loaded: list[LoadedHead] = []
    raws: list[RawOutput] = []
    if heads:
        import torch

        from ..errors import ConfigError
        from ..models import select_device

        device = select_device(str(icfg.get("device", "auto")))
        if icfg.get("gpu") and device.type != "cuda":
            raise ConfigError("key 'infer.gpu' is true but no CUDA device is available")
        if icfg.get("threads"):
            torch.set_num_threads(int(icfg["threads"]))
        for head in heads:
            lh = head.load(config, device)
            head.check_input(lh, cutouts.bands, cutouts.size)
            for v in lh.inputs:
                if v not in cutouts.variables and v not in KNOWN_INPUTS:
                    from ..errors import InputError

                    raise InputError(tile, str(paths["cutouts"]),
                                     f"model {head.name!r} needs the per-object variable "
                                     f"{v!r}, which the cutouts store does not have")
            loaded.append(lh)
        context = {}
        wanted = {v for lh in loaded for v in lh.inputs}
        if "psf_fwhm" in wanted and "psf_fwhm" not in cutouts.variables:
            psf = tile_psf_fwhm(config, tile, cutouts.bands)
            context["psf_fwhm"] = np.broadcast_to(psf, (len(cutouts), len(psf)))
        if "psf_beta" in wanted and "psf_beta" not in cutouts.variables:
            beta = tile_psf_beta(cutouts, tile)
            context["psf_beta"] = np.broadcast_to(beta, (len(cutouts), len(beta)))
        raws = infer_arrays(cutouts, loaded, batch_size, device, context=context)
    table = build_table(cutouts.object_id, heads, loaded, raws)
    write_infer(table, paths["infer"])
