"""How well an optical kernel bank reproduces the electronic one: gains and fidelity tables.

* :func:`fit_gain`: the closed-form least-squares electronic gain per output channel
  (the paper's model); :func:`fit_element_gains`: one per metasurface (element), which
  restores the relative scale of a channel's ``2 C_in`` elements;
* :func:`fidelity_table` / :func:`summarize_fidelity`: per-element and per-channel kernel
  error ``||g P - K|| / ||K||`` (an all-zero optical kernel scores 1), Pearson correlation,
  and the fraction of the aperture energy in the crop, loss window and render window.

Units: PSFs in fractions of the aperture energy; kernels in the units of the
electronic conv weights; gains convert one into the other.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..optics.render import crop_center
from .kernels import merge_signed, split_kernel


def fit_gain(psf_crop_signed: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Closed-form least-squares electronic gain per output channel.

    Args:
        psf_crop_signed: ``[C_out, C_in, k, k]`` signed optical kernels ``P = P+ - P-``
            (aperture-energy units).
        weight: ``[C_out, C_in, k, k]`` electronic kernels ``K``.

    Returns:
        ``gain [C_out]`` with ``g_o = <P_o, K_o> / <P_o, P_o>`` (sums over in-channel and
        kernel entries), the minimiser of ``||g_o P_o - K_o||^2``. A channel with
        ``P_o == 0`` gets ``g_o = 0`` (the minimum-norm minimiser).
    """
    if psf_crop_signed.shape != weight.shape or psf_crop_signed.dim() != 4:
        raise ValueError(f"psf_crop_signed {tuple(psf_crop_signed.shape)} and weight "
                         f"{tuple(weight.shape)} must both be [C_out, C_in, k, k]")
    p = psf_crop_signed.to(torch.float64)
    kk = weight.to(torch.float64)
    num = (p * kk).sum(dim=(1, 2, 3))
    den = (p * p).sum(dim=(1, 2, 3))
    g = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
    return g.to(weight.dtype)


def fit_element_gains(psf_crop: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Closed-form least-squares electronic gain per metasurface element.

    Args:
        psf_crop: ``[E, k, k]`` crop PSFs ``P_e`` (aperture-energy units, >= 0), ordered like
            :func:`split_kernel` (``E = 2 C_out C_in``).
        weight: ``[C_out, C_in, k, k]`` signed electronic kernels ``K``.

    Returns:
        ``gains [E]`` (kernel units per aperture-energy unit). The optical kernel of
        ``(o, i)`` is ``g_+ P_+ - g_- P_-`` (elements ``e = (o C_in + i) 2 + s``, sign
        ``+1`` for ``s = 0`` and ``-1`` for ``s = 1``); per ``(o, i)`` the pair ``(g_+, g_-)``
        minimises ``||g_+ P_+ - g_- P_- - K[o, i]||^2`` jointly (the 2x2 normal equations).
        Rank-deficient pairs (a dark ``P_e == 0``, or ``P_+`` proportional to ``P_-``) get
        the minimum-norm minimiser (pseudo-inverse), so a dark element has gain 0.

    This is ``2 C_out C_in`` electronic scalars (one per sensor read-out before the
    subtraction) instead of :func:`fit_gain`'s ``C_out`` (the paper-faithful model, where
    one scale per output channel must also carry the relative scale of its ``2 C_in``
    elements, which the scale-free stage-2 losses do not control).
    """
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"weight must be [C_out, C_in, k, k], got {tuple(weight.shape)}")
    c_out, c_in, k, _ = weight.shape
    if psf_crop.shape != (2 * c_out * c_in, k, k):
        raise ValueError(f"psf_crop must be [{2 * c_out * c_in}, {k}, {k}] for weight {tuple(weight.shape)}, "
                         f"got {tuple(psf_crop.shape)}")
    p = psf_crop.detach().to(torch.float64).reshape(c_out * c_in, 2, k * k)
    a = torch.stack([p[:, 0], -p[:, 1]], dim=-1)                     # [C_out C_in, k^2, 2]
    b = weight.detach().to(torch.float64).reshape(c_out * c_in, k * k, 1)
    g = torch.linalg.pinv(a, rtol=1e-10) @ b                          # [C_out C_in, 2, 1]
    return g.reshape(-1).to(weight.dtype)


def apply_element_gains(psf_crop: torch.Tensor, gains: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """Signed optical kernels ``[n_out, n_in, k, k]`` = ``g_+ P_+ - g_- P_-`` (see :func:`fit_element_gains`)."""
    return merge_signed(psf_crop * gains.to(psf_crop.dtype)[:, None, None], n_out, n_in)


def element_gain_shape(gains: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """Per-element gains ``[E]`` as the front end holds them: ``[n_out, n_in, 2]`` (sign last)."""
    return gains.reshape(n_out, n_in, 2)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def fidelity_table(psf_window: torch.Tensor, weight: torch.Tensor, gain: torch.Tensor | None = None,
                   psf_render: torch.Tensor | None = None,
                   element_gain: torch.Tensor | None = None) -> pd.DataFrame:
    """Per-element and per-output-channel fidelity of an optical kernel bank.

    Args:
        psf_window: ``[E, W, W]`` PSFs on the loss window (aperture-energy units).
        weight: ``[C_out, C_in, k, k]`` electronic kernels.
        gain: ``[C_out]`` electronic gains; default :func:`fit_gain` on the crop.
        psf_render: optional ``[E, R, R]`` PSFs on a larger (render) window for ``eff_render``.
        element_gain: ``[E]`` per-element gains; default :func:`fit_element_gains` on the crop.

    Returns a DataFrame, one row per element (``level='element'``) then one per output
    channel (``level='channel'``), with columns

    * ``index`` (element e or channel o), ``out_channel``, ``in_channel``, ``sign``
      (0: K+, 1: K-, -1 for channel rows), ``dark`` (target all zero);
    * ``norm_err``: element: ``min_a ||a P_e - T_e|| / ||T_e||`` on the crop; channel:
      ``||g_o P_o - K_o|| / ||K_o||`` with the signed crop ``P_o`` (NaN where the target is 0);
    * ``corr``: Pearson correlation between the crop and the target (NaN for dark/constant);
    * ``eff_crop``, ``eff_window``, ``eff_render``: fraction of the aperture energy inside
      the ``k x k`` crop, the loss window and the render window (channel rows: mean over
      its ``2 C_in`` elements);
    * ``gain`` (channel rows: the per-channel gain; element rows: the per-element gain),
      ``target_sum`` (element rows: sum of T_e);
    * ``norm_err_elem``, ``corr_elem`` (channel rows): error and correlation of the
      per-element-gain kernel ``Q_o = g_+ P_+ - g_- P_-`` (:func:`fit_element_gains`) against
      ``K_o``; ``norm_err``/``corr`` of channel rows are the per-channel-gain (paper) model.
    """
    c_out, c_in, k, _ = weight.shape
    psf_window = psf_window.detach().to(torch.float64).cpu()
    weight = weight.detach().to(torch.float64).cpu()
    targets = split_kernel(weight)
    if psf_window.shape[0] != targets.shape[0]:
        raise ValueError(f"psf_window has {psf_window.shape[0]} elements, weight needs {targets.shape[0]}")
    crop = crop_center(psf_window, k)
    signed = merge_signed(crop, c_out, c_in)
    if gain is None:
        gain = fit_gain(signed, weight)
    gain = gain.detach().to(torch.float64).cpu()
    if element_gain is None:
        element_gain = fit_element_gains(crop, weight)
    element_gain = element_gain.detach().to(torch.float64).cpu().reshape(-1)
    signed_elem = apply_element_gains(crop, element_gain, c_out, c_in)
    eff_crop = crop.sum(dim=(-2, -1)).numpy()
    eff_win = psf_window.sum(dim=(-2, -1)).numpy()
    eff_ren = (psf_render.detach().to(torch.float64).cpu().sum(dim=(-2, -1)).numpy()
               if psf_render is not None else np.full(len(eff_crop), np.nan))
    rows = []
    for e in range(targets.shape[0]):
        o, rem = divmod(e, 2 * c_in)
        i, s = divmod(rem, 2)
        t = targets[e].reshape(-1).numpy()
        p = crop[e].reshape(-1).numpy()
        dark = bool(t.sum() <= 0)
        if dark:
            err, corr = float("nan"), float("nan")
        else:
            pp = float((p * p).sum())
            a = float((p * t).sum()) / pp if pp > 0 else 0.0
            err = float(np.linalg.norm(a * p - t) / np.linalg.norm(t))
            corr = _pearson(p, t)
        rows.append(dict(level="element", index=e, out_channel=o, in_channel=i, sign=s, dark=dark,
                         norm_err=err, corr=corr, eff_crop=float(eff_crop[e]), eff_window=float(eff_win[e]),
                         eff_render=float(eff_ren[e]), gain=float(element_gain[e]), target_sum=float(t.sum()),
                         norm_err_elem=float("nan"), corr_elem=float("nan")))
    for o in range(c_out):
        p = signed[o].reshape(-1).numpy()
        kk = weight[o].reshape(-1).numpy()
        nk = float(np.linalg.norm(kk))
        err = float(np.linalg.norm(float(gain[o]) * p - kk) / nk) if nk > 0 else float("nan")
        q = signed_elem[o].reshape(-1).numpy()
        err_elem = float(np.linalg.norm(q - kk) / nk) if nk > 0 else float("nan")
        sl = slice(o * 2 * c_in, (o + 1) * 2 * c_in)
        rows.append(dict(level="channel", index=o, out_channel=o, in_channel=-1, sign=-1,
                         dark=bool(nk == 0), norm_err=err, corr=_pearson(p, kk),
                         eff_crop=float(eff_crop[sl].mean()), eff_window=float(eff_win[sl].mean()),
                         eff_render=float(np.mean(eff_ren[sl])), gain=float(gain[o]),
                         target_sum=float(np.abs(kk).sum()), norm_err_elem=err_elem, corr_elem=_pearson(q, kk)))
    return pd.DataFrame(rows)


def summarize_fidelity(fidelity: pd.DataFrame) -> dict:
    """Means of the channel-level (signed, gain-restored) and element-level fidelity.

    ``channel_*``: per-channel gain (paper model, :func:`fit_gain`); ``channel_*_elem``:
    per-element gains (:func:`fit_element_gains`); ``eff_*``: lit elements.
    """
    lvl = fidelity["level"]
    ch = fidelity[lvl == "channel"]
    el = fidelity[(lvl == "element") & (~fidelity["dark"].astype(bool))]
    dk = fidelity[(lvl == "element") & (fidelity["dark"].astype(bool))]
    return {
        "channel_norm_err_mean": float(ch["norm_err"].mean()),
        "channel_corr_mean": float(ch["corr"].mean()),
        "channel_norm_err_elem_mean": float(ch["norm_err_elem"].mean()),
        "channel_corr_elem_mean": float(ch["corr_elem"].mean()),
        "element_norm_err_mean": float(el["norm_err"].mean()),
        "element_corr_mean": float(el["corr"].mean()),
        "eff_crop_mean": float(el["eff_crop"].mean()),
        "eff_window_mean": float(el["eff_window"].mean()),
        "eff_render_mean": float(el["eff_render"].mean()),
        "n_dark": int(len(dk)),
        "dark_eff_crop_mean": float(dk["eff_crop"].mean()) if len(dk) else float("nan"),
    }


def _batched_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = torch.sqrt((a * a).sum(1) * (b * b).sum(1))
    return torch.where(den > 0, (a * b).sum(1) / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.full_like(den, float("nan")))
