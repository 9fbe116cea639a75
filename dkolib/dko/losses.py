"""Stage-2 losses: how far a metasurface's PSF window is from its non-negative target.

* :func:`paper_loss`: the paper's MSE of sum-normalised PSF and kernel on the loss window;
* :func:`leakage_loss`: a scale-free shape residual over the whole loss window plus the
  fraction of the aperture energy that misses the ``k x k`` crop (light a real sensor sees).

PSF windows ``[E, W, W]`` are in units of the energy incident on one aperture
(``dkolib.optics.propagation.psf(..., normalize=True)``); targets ``[E, k, k]`` are
non-negative (:func:`dkolib.dko.kernels.split_kernel`).
"""

from __future__ import annotations

from typing import Callable

import torch

from .kernels import _dark_mask, crop_mask, pad_to_window


def _check_pair(psf_window: torch.Tensor, target: torch.Tensor) -> tuple[int, int]:
    if psf_window.dim() != 3 or psf_window.shape[-1] != psf_window.shape[-2]:
        raise ValueError(f"psf_window must have shape [E, W, W], got {tuple(psf_window.shape)}")
    if target.dim() != 3 or target.shape[-1] != target.shape[-2]:
        raise ValueError(f"target must have shape [E, k, k], got {tuple(target.shape)}")
    if psf_window.shape[0] != target.shape[0]:
        raise ValueError(f"psf_window has {psf_window.shape[0]} elements, target {target.shape[0]}")
    if (target < 0).any():
        raise ValueError("targets must be non-negative (split signed kernels with split_kernel)")
    return psf_window.shape[-1], target.shape[-1]


def _reduce(per_element: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_element
    if reduction == "sum":
        return per_element.sum()
    if reduction == "mean":
        return per_element.mean()
    raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


def paper_loss(psf_window: torch.Tensor, target: torch.Tensor, reduction: str = "mean",
               eps: float = 1e-20) -> torch.Tensor:
    """The paper's stage-2 loss: MSE of sum-normalised PSF vs sum-normalised kernel.

    Args:
        psf_window: ``[E, W, W]`` PSF on the loss window (aperture-energy units, >= 0).
        target: ``[E, k, k]`` non-negative kernels (e.g. from :func:`split_kernel`), k <= W.
        reduction: ``'mean'`` (over elements; equals the MSE over all E*W*W entries),
            ``'sum'`` (over elements) or ``'none'`` (``[E]``).

    Per element, with ``T`` the target zero-padded into the window (:func:`pad_to_window`):

    * lit element (``sum T > 0``):
      ``L_e = mean_{W x W} (P / sum_W P - T / sum_W T)^2``
      (scale-free; zero iff P is proportional to T on the window);
    * dark element (``T == 0``): ``L_e = (sum_W P)^2 / W^2``, the squared fraction of the
      aperture energy that lands in the window, divided by the pixel count so that its
      scale matches the lit term (whose maximum is ``2 / W^2``). Zero iff no light
      reaches the window. The paper does not define this case (0/0).
    """
    w, _ = _check_pair(psf_window, target)
    t = pad_to_window(target.to(psf_window.dtype), w)
    t_sum = t.sum(dim=(-2, -1))
    dark = t_sum <= 0
    p_sum = psf_window.sum(dim=(-2, -1))
    p_n = psf_window / (p_sum + eps)[:, None, None]
    t_n = t / torch.where(dark, torch.ones_like(t_sum), t_sum)[:, None, None]
    lit_loss = ((p_n - t_n) ** 2).mean(dim=(-2, -1))
    dark_loss = p_sum ** 2 / float(w * w)
    return _reduce(torch.where(dark, dark_loss, lit_loss), reduction)


def leakage_loss(psf_window: torch.Tensor, target: torch.Tensor, leakage_weight: float = 1.0,
                 reduction: str = "mean", eps: float = 1e-30) -> torch.Tensor:
    """Shape loss that also sees light falling outside the ``k x k`` kernel crop.

    Args:
        psf_window: ``[E, W, W]`` PSF in units of the aperture energy (its sum over the
            whole sensor plane is at most 1). ``W`` is the loss window.
        target: ``[E, k, k]`` non-negative kernels, k <= W.
        leakage_weight: lambda >= 0 below.
        reduction: ``'mean'``, ``'sum'`` (over elements) or ``'none'`` (``[E]``).

    With ``P`` the PSF window, ``T`` the target zero-padded into it (:func:`pad_to_window`),
    ``C`` the ``k x k`` crop and ``a* = <P, T> / <T, T>`` the best per-element scalar::

        lit:   L_e = ||P - a* T||^2 / ||P||^2  +  lambda * (1 - sum_C P)
                   = 1 - <P, T>^2 / (||P||^2 ||T||^2)  +  lambda * (1 - E_crop)
        dark:  L_e = sum_W P                      (= E_window)

    * The first term is the squared relative residual of the best-scaled target over
      the *whole* loss window: light inside the window but outside the crop is residual
      (the paper's loss ignores its absolute amount; the crop-kernel model ignores it
      completely). Dividing by ``||P||^2`` makes it scale-free.
    * The second term is the fraction of the aperture energy that does *not* land in the
      crop: light in the window outside the crop, light beyond the window (which a real
      sensor also sees) and light lost. Penalising only the in-window leak in aperture
      units would be minimised by sending all light beyond the window (a dim kernel that
      the fitted gain must amplify, together with the sensor noise), so the leak is
      counted over the whole plane, i.e. ``1 - E_crop``; the constant 1 does not change
      gradients, it only keeps the term in ``[0, 1]`` for an energy-conserving surface.
      On the sensor under an array this counts the halo on the metasurface's own read-out
      region and the crosstalk on its neighbours' regions alike (the term does not see where
      the missing light lands; ``scripts/crosstalk_study.py`` measures it at each weight).
    * A dark element's loss is the fraction of the aperture energy in the window.
    """
    if leakage_weight < 0:
        raise ValueError(f"leakage_weight must be >= 0, got {leakage_weight}")
    w, k = _check_pair(psf_window, target)
    t = pad_to_window(target.to(psf_window.dtype), w)
    dark = _dark_mask(t)
    mask = crop_mask(w, k, dtype=psf_window.dtype, device=psf_window.device)
    pt = (psf_window * t).sum(dim=(-2, -1))
    pp = (psf_window * psf_window).sum(dim=(-2, -1))
    tt = (t * t).sum(dim=(-2, -1))
    tt_safe = torch.where(dark, torch.ones_like(tt), tt)
    shape = 1.0 - pt * pt / (pp * tt_safe + eps)
    e_window = psf_window.sum(dim=(-2, -1))
    e_crop = (psf_window * mask).sum(dim=(-2, -1))
    lit = shape + leakage_weight * (1.0 - e_crop)
    return _reduce(torch.where(dark, e_window, lit), reduction)


def smoothness_penalty(transmission: torch.Tensor) -> torch.Tensor:
    """Cell-to-cell roughness ``[E]`` of complex transmissions ``[E, N, N]`` (dimensionless).

    ``S_e = (mean |t[j+1, l] - t[j, l]|^2 + mean |t[j, l+1] - t[j, l]|^2) / 4``: 0 for a
    uniform surface, 1 in expectation for unit-amplitude white random phase (two independent
    uniform phases differ by ``E|e^{ia} - e^{ib}|^2 = 2``), independent of ``N``. It works
    on the complex transmission, so a phase wrap (``2 pi`` step) costs nothing. Under the
    staircase cell model the light a surface steers by a local phase gradient ``f`` (cycles/m)
    is weighted by ``sinc^2(p f)``: penalising steps between neighbours favours designs
    whose light stays in the low orders.
    """
    if transmission.dim() != 3 or transmission.shape[-1] != transmission.shape[-2]:
        raise ValueError(f"transmission must be [E, N, N], got {tuple(transmission.shape)}")
    dy = (transmission[:, 1:, :] - transmission[:, :-1, :]).abs().square().mean(dim=(-2, -1))
    dx = (transmission[:, :, 1:] - transmission[:, :, :-1]).abs().square().mean(dim=(-2, -1))
    return (dx + dy) / 4.0


LOSSES: dict[str, Callable] = {"paper": paper_loss, "leakage": leakage_loss}


def stage2_loss(name: str, psf_window: torch.Tensor, target: torch.Tensor, leakage_weight: float = 1.0,
                reduction: str = "sum") -> torch.Tensor:
    """Dispatch to :func:`paper_loss` or :func:`leakage_loss` by name."""
    if name == "paper":
        return paper_loss(psf_window, target, reduction=reduction)
    if name == "leakage":
        return leakage_loss(psf_window, target, leakage_weight=leakage_weight, reduction=reduction)
    raise ValueError(f"unknown DKO loss {name!r}: choose 'paper' or 'leakage'")
