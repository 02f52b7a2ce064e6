"""Per-pixel noise of arcsinh-normalised stamps: likelihood and reconstruction chi^2.

Stamps hold ``x = arcsinh(s)`` with ``s = F / sigma`` (``sigma`` the band's background
noise), so ``s`` is the flux in units of the background noise. Our noise model, in
flux units:

    sigma_s^2 = 1 + eps^2 f^2

i.e. the background noise plus a fractional floor ``eps`` (default 5 %) of the local
flux ``f``, standing for the source's Poisson noise (its gain is not in the cutouts)
and for what no 40-number model can reproduce in bright cores.

Two likelihoods (the model card's ``arch.likelihood``; cards without the key are
``"asinh"``):

* ``"flux"`` (current): Gaussian in flux, for a reconstruction ``r`` (arcsinh units)
  with model flux ``m = sinh(r)``.

  - Training loss: ``0.5 sum (s - m)^2 / v_train``, ``v_train = 1 + eps^2 max(s^2,
    m^2)``: the floor at the larger of the observed and model flux, so that a bright
    pixel the decoder cannot (yet) reproduce, or one it invents, weighs at most
    ``(relative error / eps)^2`` and no single star or cosmic ray dominates a batch's
    gradient; on faint pixels ``v_train`` is ~1 either way, so there is no bias.
  - Reconstruction chi^2 (the goodness of fit of the reconstruction as a model of the
    data, hence the variance of the data *given the model*): ``mean((s - m)^2 /
    (1 + eps^2 m^2))`` per pixel, 1 on average for a reconstruction within the noise
    (on the sky, ``s`` is N(0, 1) about ``m = 0``); light the model does not predict
    (a cosmic ray, a trail) counts with the background noise only.
* ``"flux_model"`` (training loss only; the first two stages of the shipped model):
  the Gaussian likelihood with the variance at the model,
  ``0.5 sum[(s - m)^2 / (1 + eps^2 m^2) + log(1 + eps^2 m^2)]``. A bright pixel the
  decoder does not reproduce weighs ``s^2`` here, so a few stars or hot pixels dominate
  the gradient and the validation loss jumps; hence the ``"flux"`` loss.
* ``"asinh"`` (the first shipped model): a Gaussian in arcsinh units with the variance
  propagated to ``x`` and evaluated at the *observed* stamp,
  ``sigma_x^2 = (1 + eps^2 s^2) / (1 + s^2)``. Evaluated at the noisy ``x``, this
  linearisation gives sky pixels a chi^2 of about 2.2 (not 1) for a perfect
  reconstruction, and weights upward fluctuations more than downward ones, which
  biases faint outskirts high; hence ``"flux"``.
"""

from __future__ import annotations

import torch

__all__ = ["EPS", "LIKELIHOODS", "LOSSES", "MAX_ASINH", "asinh_variance", "flux_variance",
           "nll_per_stamp", "chi2_map", "chi2_per_pixel"]

#: fractional flux-noise floor
EPS = 0.05
#: likelihood names (see the module docstring): noise models of the reconstruction chi^2
LIKELIHOODS = ("flux", "asinh")
#: training-loss names: the likelihoods' own losses plus ``"flux_model"``
LOSSES = ("flux", "flux_model", "asinh")
#: reconstructions are clamped to |r| <= MAX_ASINH before sinh (S/N per pixel ~ 8e4)
MAX_ASINH = 12.0


def asinh_variance(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-pixel noise variance of arcsinh stamps ``x`` (same shape), ``"asinh"`` model."""
    s2 = torch.sinh(x) ** 2
    return (1.0 + eps * eps * s2) / (1.0 + s2)


def flux_variance(model_flux: torch.Tensor, eps: float = EPS,
                  flux: torch.Tensor | None = None) -> torch.Tensor:
    """Flux variance (background-noise units) of the ``"flux"`` model.

    ``1 + eps^2 m^2`` at model flux ``m`` (the chi^2's); with the observed ``flux``
    ``s`` given, ``1 + eps^2 max(s^2, m^2)`` (the training loss's).
    """
    f2 = model_flux * model_flux
    if flux is not None:
        f2 = torch.maximum(flux * flux, f2)
    return 1.0 + eps * eps * f2


def _check(likelihood: str) -> None:
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; known: {LIKELIHOODS}")


def nll_per_stamp(x: torch.Tensor, recon: torch.Tensor, eps: float = EPS,
                  likelihood: str = "flux") -> torch.Tensor:
    """Negative log-likelihood of each stamp (constants dropped): ``(N, B, S, S)`` -> ``(N,)``.

    Parameters
    ----------
    x, recon : Tensor (N, B, S, S)
        Observed and reconstructed stamps, arcsinh units.
    eps : float
        Fractional flux floor.
    likelihood : {"flux", "flux_model", "asinh"}
        The training loss (:data:`LOSSES`).
    """
    if likelihood not in LOSSES:
        raise ValueError(f"unknown loss {likelihood!r}; known: {LOSSES}")
    if likelihood == "flux_model":
        m = torch.sinh(recon.clamp(-MAX_ASINH, MAX_ASINH))
        v = flux_variance(m, eps)
        return 0.5 * ((torch.sinh(x) - m) ** 2 / v + torch.log(v)).flatten(1).sum(1)
    return 0.5 * _chi2_map(x, recon, eps, likelihood, train=True).flatten(1).sum(1)


def _chi2_map(x: torch.Tensor, recon: torch.Tensor, eps: float, likelihood: str,
              train: bool = False) -> torch.Tensor:
    if likelihood == "asinh":
        return (x - recon) ** 2 / asinh_variance(x, eps)
    s = torch.sinh(x)
    m = torch.sinh(recon.clamp(-MAX_ASINH, MAX_ASINH))
    return (s - m) ** 2 / flux_variance(m, eps, s if train else None)


def chi2_map(x: torch.Tensor, recon: torch.Tensor, eps: float = EPS,
             likelihood: str = "asinh") -> torch.Tensor:
    """Reconstruction chi^2 of every pixel: ``(N, B, S, S)`` -> ``(N, B, S, S)``.

    ``likelihood`` selects the noise model (module docstring); the default is the
    first shipped model's, ``"asinh"``, for cards without ``arch.likelihood``.
    """
    _check(likelihood)
    return _chi2_map(x, recon, eps, likelihood)


def chi2_per_pixel(x: torch.Tensor, recon: torch.Tensor, eps: float = EPS,
                   likelihood: str = "asinh") -> torch.Tensor:
    """Reconstruction chi^2 per pixel of each stamp: ``(N, B, S, S)`` -> ``(N,)``
    (the mean of :func:`chi2_map` over bands and pixels)."""
    return chi2_map(x, recon, eps, likelihood).flatten(1).mean(dim=1)
