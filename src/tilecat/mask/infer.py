"""Tiled, batched inference whose stitched result equals whole-image inference.

The prepared inputs (:mod:`tilecat.mask.prepare`, normalised globally per band) are
reflect-padded once by ``halo`` pixels (plus up to one patch at the bottom/right so the
image is a whole number of patches). Windows of ``patch + 2 halo`` pixels start at
multiples of ``patch`` in the padded frame; only the central ``patch``² of each window
is kept. With ``halo`` >= the receptive-field radius and ``patch``, ``halo`` multiples of
the network's pooling stride, every kept pixel sees exactly the inputs (and pooling
grid) it would see in one pass over the whole padded image: tiles are stitched
seamlessly (MaxiMask's overlapping tiles idea, DESIGN.md §5).

Windows of all bands go through the network together, ``batch_size`` at a time, on
any device: CUDA with fp16 autocast and pinned host memory, otherwise CPU with
channels_last tensors; always under ``torch.inference_mode``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..models import autocast

__all__ = ["round_up", "window_grid", "predict", "predict_probs", "Sink"]

#: ``sink(image_index, y0, y1, x0, x1, probs)`` receives probs (K, y1-y0, x1-x0) float32.
Sink = Callable[[int, int, int, int, int, np.ndarray], None]


def round_up(n: int, m: int) -> int:
    """Smallest multiple of ``m`` that is >= ``n``."""
    return -(-int(n) // int(m)) * int(m)


def window_grid(ny: int, nx: int, patch: int) -> list[tuple[int, int]]:
    """Tile origins (y0, x0) in image pixels covering ``(ny, nx)`` with ``patch`` tiles."""
    return [(y, x) for y in range(0, ny, patch) for x in range(0, nx, patch)]


def _pad(x: np.ndarray, halo: int, patch: int) -> np.ndarray:
    """Reflect-pad (C, ny, nx) by ``halo`` on all sides plus the tile remainder bottom/right."""
    _, ny, nx = x.shape
    ey = round_up(ny, patch) - ny
    ex = round_up(nx, patch) - nx
    mode = "reflect" if min(ny, nx) > 1 else "edge"
    return np.pad(x, ((0, 0), (halo, halo + ey), (halo, halo + ex)), mode=mode)


def _batches(padded: list[np.ndarray], ny: int, nx: int, patch: int, halo: int,
             batch_size: int) -> Iterator[tuple[np.ndarray, list[tuple[int, int, int]]]]:
    keys = [(i, y, x) for i in range(len(padded)) for (y, x) in window_grid(ny, nx, patch)]
    w = patch + 2 * halo
    for s in range(0, len(keys), batch_size):
        chunk = keys[s:s + batch_size]
        arr = np.stack([padded[i][:, y:y + w, x:x + w] for (i, y, x) in chunk])
        yield arr, chunk


def predict(
    model: torch.nn.Module,
    inputs: np.ndarray,
    sink: Sink,
    *,
    patch: int = 256,
    halo: int = 32,
    batch_size: int = 8,
    device: torch.device | None = None,
    amp: bool = True,
) -> None:
    """Run ``model`` over every image of ``inputs`` tile by tile; hand results to ``sink``.

    Parameters
    ----------
    model : torch.nn.Module
        Fully-convolutional network in eval mode, attribute ``stride`` (pooling factor).
    inputs : ndarray, shape (n, C, ny, nx), float32
        Prepared inputs (all images the same shape, e.g. the bands of a tile).
    sink : callable
        Called once per tile with ``(image_index, y0, y1, x0, x1, probs)``, probs of
        shape (K, y1 - y0, x1 - x0) float32 sigmoid probabilities, in image pixels.
    patch : int
        Kept tile size (rounded up to a multiple of the stride).
    halo : int
        Context around each tile (rounded up to a multiple of the stride); must be at
        least the receptive-field radius for exact stitching.
    batch_size : int
        Windows per forward pass (across images and tiles).
    device : torch.device, optional
        Default: the device of the model's parameters.
    amp : bool
        fp16 autocast on CUDA.
    """
    n, _, ny, nx = inputs.shape
    stride = int(getattr(model, "stride", 1))
    patch = round_up(max(patch, stride), stride)
    halo = round_up(halo, stride)
    if device is None:
        device = next(model.parameters()).device
    cuda = device.type == "cuda"
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt).eval()
    padded = [_pad(inputs[i], halo, patch) for i in range(n)]
    with torch.inference_mode():
        for arr, keys in _batches(padded, ny, nx, patch, halo, max(1, int(batch_size))):
            t = torch.from_numpy(arr)
            if cuda:
                t = t.pin_memory().to(device, non_blocking=True)
            else:
                t = t.to(device)
            t = t.contiguous(memory_format=fmt)
            with autocast(device, enabled=amp):
                logits = model(t)
            probs = torch.sigmoid(logits.float())[:, :, halo:halo + patch, halo:halo + patch]
            probs = probs.cpu().numpy()
            for p, (i, y, x) in zip(probs, keys):
                y1, x1 = min(y + patch, ny), min(x + patch, nx)
                sink(i, y, y1, x, x1, np.ascontiguousarray(p[:, :y1 - y, :x1 - x]))


def predict_probs(model: torch.nn.Module, inputs: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`predict` collected into one array (n, K, ny, nx) float32 (tests, benchmarks)."""
    n, _, ny, nx = inputs.shape
    out: np.ndarray | None = None

    def sink(i: int, y0: int, y1: int, x0: int, x1: int, p: np.ndarray) -> None:
        nonlocal out
        if out is None:
            out = np.zeros((n, p.shape[0], ny, nx), dtype=np.float32)
        out[i, :, y0:y1, x0:x1] = p

    predict(model, inputs, sink, **kwargs)
    assert out is not None
    return out
