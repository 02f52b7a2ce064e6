"""Grad-CAM (Selvaraju et al. 2017) for tilecat's stamp CNNs.

The class-activation map of one output is ``ReLU(sum_c w_c A_c)`` over the channels
``c`` of the last convolutional block's activations ``A`` with ``w_c`` the spatial
mean of d output / d A_c, upsampled to the stamp size. For the mirror-averaged
modules (``SpinSymmetric``, ``MirrorAveraged``, which run the stamp and its mirror
image as one batch of two) the mirror half's map is flipped back and averaged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["last_conv_block", "gradcam"]


def last_conv_block(module: nn.Module) -> nn.Module:
    """The last :class:`~tilecat.morphology.net.ConvBNReLU` (or Conv2d) of ``module``."""
    from ..morphology.net import ConvBNReLU

    last = None
    for m in module.modules():
        if isinstance(m, ConvBNReLU):
            last = m
    if last is None:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                last = m
    if last is None:
        raise ValueError("module has no convolution: Grad-CAM needs one")
    return last


def gradcam(module: nn.Module, stamp: np.ndarray, index: int,
            extra: tuple[np.ndarray, ...] = ()) -> tuple[np.ndarray, float]:
    """Grad-CAM map of output ``index`` for one stamp.

    Parameters
    ----------
    module : nn.Module
        Inference module: ``(N, C, S, S)`` -> ``(N, K)``.
    stamp : ndarray, shape (C, S, S)
    index : int
        Output column to explain.
    extra : tuple of ndarray
        The module's further per-object inputs for this object (e.g. PSF FWHM per
        band), each of shape ``(...)`` without the object axis.

    Returns
    -------
    cam : ndarray of float32, shape (S, S)
        In [0, 1] (all zeros when no positive evidence).
    value : float
        The output value being explained.
    """
    layer = last_conv_block(module)
    acts: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        acts.append(out)

    h = layer.register_forward_hook(hook)
    module.eval()
    try:
        x = torch.from_numpy(np.ascontiguousarray(stamp, dtype=np.float32))[None]
        with torch.enable_grad():
            y = module(x, *(torch.from_numpy(np.asarray(e, np.float32))[None] for e in extra))
            value = y[0, index]
            value.backward()
    finally:
        h.remove()
    a = acts[-1]
    weights = a.grad.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * a).sum(1, keepdim=True)).detach()
    size = stamp.shape[-1]
    cams = torch.nn.functional.interpolate(cams, size=(size, size), mode="bilinear",
                                           align_corners=False)[:, 0]
    cam = cams[0] if cams.shape[0] == 1 else (cams[0] + cams[1].flip(-1)) / 2
    cam = cam.numpy().astype(np.float32)
    top = float(cam.max())
    return (cam / top if top > 0 else cam), float(value.detach())
