"""The structure network: ln r50, ln n, e1, e2 with heteroscedastic uncertainties.

:class:`StructureNet` maps stamps and the PSF FWHM of each band to 8 numbers: the
means ``mu`` of (ln r50 [r50 in pixels], ln n, e1, e2) and ``ln sigma`` of each,
trained with a Gaussian negative log-likelihood against the simulator's truth
(intrinsic, PSF-free profiles). The PSF FWHM (per band, in pixels, as
``ln(FWHM / 4 px)``) joins the pooled image features before the MLP, so the network
knows how much of the apparent size is PSF: the prediction is PSF-corrected for any
seeing, not only for the training set's. With ``arch['psf_beta_input']`` the Moffat
beta of each band's PSF joins them too (as :func:`beta_feature` ``= 3 / beta - 1``):
at a given FWHM a low-beta PSF puts much more light into its wings (its own
half-light radius is 0.57 FWHM at beta 4.5, 0.68 at 2.5, 1.13 at 1.5), which a
network told only the FWHM reads as a larger galaxy. With ``arch['profile_radii']`` the
stamp's curve of growth per band (:func:`profile_feature`: the fraction of the flux
within the outermost radius that lies within each radius) joins them as well: a direct
measurement of how the light is spread out to the stamp's edge, which the pooled
convolutional features only encode implicitly. With ``arch['psf_profile']`` the PSF's own
curve of growth through the same apertures (:func:`psf_profile_feature`: the Moffat of
each band's FWHM and beta, drawn on the stamp's pixel grid) joins them last: the
galaxy's and the PSF's light fractions side by side, so that comparing the two at each
radius is a linear function of the inputs rather than something the MLP must learn to
compute from (FWHM, beta).

:class:`MirrorAveraged` is the inference module: it averages the predictions for a
stamp and for its mirror image (whose e2 changes sign), or with ``arch['tta'] = 'd4'``
over all quarter turns and mirrors, so that the outputs are exactly mirror-equivariant,
and returns ``(mu, sigma)`` as an ``(N, 8)`` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..morphology.net import DEFAULT_ARCH, MLP, Trunk

__all__ = ["TARGETS", "StructureNet", "MirrorAveraged", "build", "gaussian_nll",
           "beta_feature", "profile_feature", "psf_profile_feature", "add_beta_input",
           "widen_inputs",
           "predict_structure", "MIRROR_SIGN", "LOG_SIGMA_MIN",
           "LOG_SIGMA_MAX", "BETA_MIN", "TTA_MODES"]

#: regression targets in output order
TARGETS: tuple[str, ...] = ("ln_r50_pix", "ln_sersic_n", "e1", "e2")
#: sign change of each target under a left-right mirror
MIRROR_SIGN: tuple[float, ...] = (1.0, 1.0, 1.0, -1.0)
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 3.0
#: test-time averages of :class:`MirrorAveraged` (``arch['tta']``)
TTA_MODES: tuple[str, ...] = ("mirror", "d4")
#: Moffat betas below this are clamped to it (beta <= 1 has infinite flux)
BETA_MIN = 1.2


def beta_feature(beta: torch.Tensor) -> torch.Tensor:
    """Network feature of the PSF's Moffat beta: ``3 / beta - 1``, beta clamped >= 1.2.

    Why ``1 / beta``: it is bounded (0 is the Gaussian limit beta -> inf, so a large
    or poorly constrained beta measured on a tile's stars lands near the training
    range, where ``ln(beta - 1)`` would grow without bound), finite for every beta > 1,
    and about as smooth in it as the PSF's light in the wings; ``3 / beta - 1`` puts
    the training range 1.5-4.5 at 1 to -0.33 (beta 3 at 0), of the order of the
    ``ln(FWHM / 4 px)`` features. NaN stays NaN.

    Parameters
    ----------
    beta : tensor (N, n_band)
        Moffat beta per band (dimensionless).
    """
    return 3.0 / beta.clamp(min=BETA_MIN) - 1.0


def profile_feature(x: torch.Tensor, radii: Sequence[float]) -> torch.Tensor:
    """Curve of growth of each band: flux within each radius / flux within the last.

    The stamps are ``arcsinh(F / sigma)`` (:func:`tilecat.normalize.asinh_norm`), so
    ``sinh(x)`` is the flux in units of the noise. Apertures are circles about the
    stamp centre (pixel centres at distance <= r). The denominator is held at >= 5
    times the noise of the outermost aperture's sum, so that a band where the object is
    not detected gives small fractions rather than noise divided by noise; fractions
    are clipped to [-1, 2] and shifted by -0.5. Computed in float32 (``sinh`` of a
    bright pixel overflows half precision).

    Parameters
    ----------
    x : tensor (N, n_band, S, S)
        Normalised stamps.
    radii : sequence of float, length K
        Aperture radii in pixels, increasing.

    Returns
    -------
    tensor (N, n_band * K)
        Band-major: band 0's K fractions, then band 1's, ...
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        f = torch.sinh(x.float())
        masks = _aperture_masks(x.shape[-1], radii, x.device)  # (K, S, S)
        cum = torch.einsum("nbij,kij->nbk", f, masks)
        floor = 5.0 * torch.sqrt(masks[-1].sum())
        frac = cum / cum[..., -1:].clamp(min=floor)
        return (frac.clamp(-1.0, 2.0) - 0.5).flatten(1)


def _aperture_masks(s: int, radii: Sequence[float], device: torch.device) -> torch.Tensor:
    """Circular apertures about the centre of an ``s`` x ``s`` stamp ``(K, s, s)``."""
    c = (s - 1) / 2.0
    ax = torch.arange(s, device=device, dtype=torch.float32) - c
    r = torch.sqrt(ax[:, None] ** 2 + ax[None, :] ** 2)
    rad = torch.as_tensor(list(radii), dtype=torch.float32, device=device)
    return (r[None] <= rad[:, None, None]).float()


def psf_profile_feature(fwhm_pix: torch.Tensor, beta: torch.Tensor, radii: Sequence[float],
                        size: int) -> torch.Tensor:
    """Curve of growth of each band's Moffat PSF through :func:`profile_feature`'s apertures.

    The PSF ``(1 + (r / alpha)^2)^-beta`` with ``alpha = FWHM / (2 sqrt(2^(1/beta) - 1))``
    is evaluated at the pixel centres of a ``size`` x ``size`` stamp about its centre
    (as the galaxy's apertures are); the light within each radius over the light within
    the last, shifted by -0.5 like the galaxy's. Float32, beta clamped >= ``BETA_MIN``.

    Parameters
    ----------
    fwhm_pix : tensor (N, n_band)
        PSF FWHM per band [pixels].
    beta : tensor (N, n_band)
        Moffat beta per band.
    radii : sequence of float, length K
        Aperture radii [pixels], increasing.
    size : int
        Stamp side [pixels].

    Returns
    -------
    tensor (N, n_band * K)
        Band-major, as :func:`profile_feature`.
    """
    with torch.autocast(device_type=fwhm_pix.device.type, enabled=False):
        w = fwhm_pix.float().clamp(min=0.1)
        b = beta.float().clamp(min=BETA_MIN)
        alpha = w / (2.0 * torch.sqrt(torch.pow(2.0, 1.0 / b) - 1.0))
        c = (size - 1) / 2.0
        ax = torch.arange(size, device=w.device, dtype=torch.float32) - c
        r2 = ax[:, None] ** 2 + ax[None, :] ** 2  # (S, S)
        img = torch.pow(1.0 + r2 / (alpha[..., None, None] ** 2), -b[..., None, None])
        cum = torch.einsum("nbij,kij->nbk", img, _aperture_masks(size, radii, w.device))
        return (cum / cum[..., -1:] - 0.5).flatten(1)


class StructureNet(nn.Module):
    """Trunk (+ PSF) + MLP -> ``(N, 8)``: ``mu`` (4) then ``ln sigma`` (4).

    ``forward(x, psf_pix, psf_beta)``: stamps ``(N, n_band, S, S)``, PSF FWHM
    ``(N, n_band)`` in pixels (ignored unless ``arch['psf_input']``) and the PSF's
    Moffat beta ``(N, n_band)`` (ignored unless ``arch['psf_beta_input']``, which
    needs ``psf_input``). The MLP's input is ``[trunk features, ln(FWHM / 4 px),
    beta_feature(beta), profile_feature(x), psf_profile_feature(FWHM, beta)]`` (the
    profiles with ``arch['profile_radii']``, the PSF's with ``arch['psf_profile']``).
    """

    def __init__(self, n_band: int, arch: dict[str, Any] | None = None) -> None:
        super().__init__()
        a = {**DEFAULT_ARCH, **(arch or {})}
        self.psf_input = bool(a.get("psf_input", False))
        self.psf_beta_input = bool(a.get("psf_beta_input", False))
        if self.psf_beta_input and not self.psf_input:
            raise ValueError("structure arch: psf_beta_input needs psf_input")
        self.profile_radii = tuple(float(r) for r in (a.get("profile_radii") or ()))
        if list(self.profile_radii) != sorted(set(self.profile_radii)):
            raise ValueError("structure arch: profile_radii must increase")
        self.psf_profile = bool(a.get("psf_profile", False))
        if self.psf_profile and not (self.psf_beta_input and self.profile_radii):
            raise ValueError("structure arch: psf_profile needs psf_beta_input and "
                             "profile_radii")
        self.trunk = Trunk(n_band, a["widths"], a["strides"], a["kernels"])
        n_prof = len(self.profile_radii) * (2 if self.psf_profile else 1)
        n_in = (self.trunk.n_features + (n_band if self.psf_input else 0)
                + (n_band if self.psf_beta_input else 0) + n_band * n_prof)
        self.head = MLP(n_in, int(a["hidden"]), 2 * len(TARGETS), float(a["dropout"]))

    def forward(self, x: torch.Tensor, psf_pix: torch.Tensor | None = None,
                psf_beta: torch.Tensor | None = None) -> torch.Tensor:
        f = self.trunk(x)
        if self.psf_input:
            if psf_pix is None:
                raise ValueError("this structure network needs the PSF FWHM per band")
            feats = [f, torch.log(psf_pix.to(f.dtype).clamp(min=0.1) / 4.0)]
            if self.psf_beta_input:
                if psf_beta is None:
                    raise ValueError("this structure network needs the PSF's Moffat beta "
                                     "per band (input 'psf_beta')")
                feats.append(beta_feature(psf_beta.to(f.dtype)))
            f = torch.cat(feats, dim=1)
        if self.profile_radii:
            f = torch.cat([f, profile_feature(x, self.profile_radii).to(f.dtype)], dim=1)
        if self.psf_profile:
            assert psf_pix is not None and psf_beta is not None
            p = psf_profile_feature(psf_pix, psf_beta, self.profile_radii, x.shape[-1])
            f = torch.cat([f, p.to(f.dtype)], dim=1)
        out = self.head(f)
        k = len(TARGETS)
        return torch.cat([out[:, :k], out[:, k:].clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)], dim=1)


def gaussian_nll(out: torch.Tensor, target: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean heteroscedastic Gaussian NLL per target (constant dropped).

    Parameters
    ----------
    out : (N, 8) tensor
        ``mu`` then ``ln sigma``.
    target : (N, 4) tensor
        True values; NaN entries are ignored.
    weight : (N,) tensor, optional
        Per-object weight of the first target's (ln r50) term: its mean becomes
        ``sum(w nll) / n`` over the finite entries (other targets unweighted).

    Returns
    -------
    (4,) tensor
        Mean NLL of each target over its finite entries.
    """
    k = target.shape[1]
    mu, log_sigma = out[:, :k], out[:, k:]
    ok = torch.isfinite(target)
    t = torch.where(ok, target, mu.detach())
    nll = 0.5 * ((t - mu) * torch.exp(-log_sigma)) ** 2 + log_sigma
    nll = torch.where(ok, nll, torch.zeros_like(nll))
    if weight is not None:
        nll = torch.cat([nll[:, :1] * weight[:, None].to(nll.dtype), nll[:, 1:]], dim=1)
    return nll.sum(0) / ok.sum(0).clamp(min=1)


class MirrorAveraged(nn.Module):
    """Inference: symmetry-averaged ``(mu, sigma)``, ``(N, 8)``.

    ``forward(x, psf_fwhm, psf_beta)`` with the PSF FWHM per band in arcsec
    ``(N, n_band)`` (converted to pixels with ``pixel_scale``) and, for a network with
    ``psf_beta_input``, the PSF's Moffat beta per band ``(N, n_band)``.

    ``tta="mirror"``: ``mu = [mu(x) + M mu(mirror x)] / 2`` with ``M`` flipping the sign
    of e2. ``tta="d4"``: the average over the 8 elements of the dihedral group (the four
    quarter turns of ``x`` and of its mirror image), each mapped back (a quarter turn
    negates e1 and e2): the outputs are then exactly invariant (r50, n) or equivariant
    (e1, e2) under every quarter turn and mirror, and the network's own orientation
    noise averages down (4x the cost of ``mirror``). ``sigma`` is the root mean square of
    the members' sigmas.
    """

    def __init__(self, net: StructureNet, pixel_scale: float = 1.0,
                 tta: str = "mirror") -> None:
        super().__init__()
        if tta not in TTA_MODES:
            raise ValueError(f"structure: test-time average {tta!r} is not 'mirror' or 'd4'")
        self.net = net
        self.pixel_scale = float(pixel_scale)
        self.turns = 4 if tta == "d4" else 1
        self.register_buffer("sign", torch.tensor(MIRROR_SIGN), persistent=False)
        # a quarter turn rotates the position angle by 90 deg: e -> -e
        self.register_buffer("turn_sign", torch.tensor([1.0, 1.0, -1.0, -1.0]),
                             persistent=False)

    def forward(self, x: torch.Tensor, psf_fwhm: torch.Tensor | None = None,
                psf_beta: torch.Tensor | None = None) -> torch.Tensor:
        n, k = x.shape[0], len(TARGETS)
        psf = None if psf_fwhm is None else torch.cat([psf_fwhm, psf_fwhm]) / self.pixel_scale
        beta = None if psf_beta is None else torch.cat([psf_beta, psf_beta])
        mu_sum: torch.Tensor | None = None
        var_sum: torch.Tensor | None = None
        for turn in range(self.turns):
            xt = x if turn == 0 else torch.rot90(x, turn, dims=(-2, -1))
            both = torch.cat([xt, xt.flip(-1)], dim=0)
            if both.device.type == "cpu":
                both = both.contiguous(memory_format=torch.channels_last)
            out = self.net(both, psf, beta).float()
            mu = out[:n, :k] + out[n:, :k] * self.sign
            if turn % 2:
                mu = mu * self.turn_sign
            var = torch.exp(2 * out[:n, k:]) + torch.exp(2 * out[n:, k:])
            mu_sum = mu if mu_sum is None else mu_sum + mu
            var_sum = var if var_sum is None else var_sum + var
        assert mu_sum is not None and var_sum is not None
        m = 2 * self.turns
        return torch.cat([mu_sum / m, torch.sqrt(var_sum / m)], dim=1)


def build(card: dict[str, Any]) -> MirrorAveraged:
    """The (untrained) inference module described by a model card."""
    arch = card.get("arch") or {}
    return MirrorAveraged(StructureNet(len(card["input"]["bands"]), arch),
                          float(card["input"].get("pixel_scale", 1.0)),
                          tta=str(arch.get("tta", "mirror")))


@torch.no_grad()
def widen_inputs(net: StructureNet, arch: dict[str, Any]) -> StructureNet:
    """A copy of ``net`` with more MLP inputs (``arch`` adds beta and/or profile inputs).

    The new network has ``arch`` and every weight of ``net``; the first MLP layer's
    weights of the added features (appended after the old ones: beta, then the
    profile, then the PSF's profile) are zero, so it computes exactly what ``net``
    computed until trained.

    Raises
    ------
    ValueError
        ``arch`` removes an input ``net`` has, changes the trunk or adds nothing.
    """
    n_band = net.trunk.layers[0].conv.in_channels
    new = StructureNet(n_band, arch)
    old_in, new_in = net.head.fc1.in_features, new.head.fc1.in_features
    kept = ((new.psf_input or not net.psf_input)
            and (new.psf_beta_input or not net.psf_beta_input)
            # a network with profile inputs can only keep them: new features go last
            and (not net.profile_radii or (new.profile_radii == net.profile_radii
                                           and new.psf_beta_input == net.psf_beta_input))
            and (new.psf_profile or not net.psf_profile))
    if not kept or new_in <= old_in:
        raise ValueError("widen_inputs: the new arch must keep every input of the network "
                         "and add beta and/or profile inputs")
    state = dict(net.state_dict())
    w = state["head.fc1.weight"]
    state["head.fc1.weight"] = torch.cat([w, w.new_zeros(w.shape[0], new_in - old_in)], dim=1)
    new.load_state_dict(state)
    return new


def add_beta_input(net: StructureNet, arch: dict[str, Any]) -> StructureNet:
    """A copy of ``net`` (without beta input) that also takes the Moffat beta.

    :func:`widen_inputs` with ``psf_beta_input: true``: the new beta features' first-layer
    weights are zero, so it computes exactly what ``net`` computed, whatever the beta,
    until trained.

    Raises
    ------
    ValueError
        ``net`` already takes beta, or has no PSF input.
    """
    if net.psf_beta_input or not net.psf_input:
        raise ValueError("add_beta_input: need a network with psf_input and without "
                         "psf_beta_input")
    return widen_inputs(net, {**arch, "psf_input": True, "psf_beta_input": True})


def predict_structure(module: nn.Module, stamps: np.ndarray,
                      inputs: Sequence[np.ndarray] = (), batch_size: int = 256) -> np.ndarray:
    """Run the inference module over stamps with its per-object inputs, as the engine does.

    Parameters
    ----------
    module : MirrorAveraged
        Called as ``module(x, *inputs)`` per batch (eval, inference mode).
    stamps : ndarray of float32, shape (N, n_band, S, S)
    inputs : sequence of ndarray, each (N, n_band)
        The head's ``inputs`` in order (``psf_fwhm`` [arcsec], then ``psf_beta``).
    batch_size : int

    Returns
    -------
    ndarray of float32, shape (N, 8)
        ``mu`` then ``sigma``.
    """
    from ..morphology.fit import predict

    out = predict(module, stamps, batch_size, aux=list(inputs))
    return out.reshape(-1, 2 * len(TARGETS))
