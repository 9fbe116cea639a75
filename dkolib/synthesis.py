"""DKO stage 2: synthesise a metasurface array whose PSFs reproduce conv kernels.

No images are involved: the loss compares each metasurface's point-spread
function (PSF) on a small sensor window with one non-negative half of a trained
first-layer kernel.

Conventions
-----------
* A signed kernel bank ``weight [C_out, C_in, k, k]`` is split into
  ``E = 2 * C_out * C_in`` non-negative targets ordered like
  :class:`dkolib.metasurface.MetasurfaceArray`: element ``e = (o * C_in + i) * 2 + s``
  holds ``K+ = max(K[o, i], 0)`` for ``s = 0`` and ``K- = max(-K[o, i], 0)`` for ``s = 1``.
* PSF windows ``[E, W, W]`` are in units of the energy incident on one
  aperture (``dkolib.psf.psf(..., normalize=True)``): their sum is the fraction
  of the light that lands in the window.
* The ``k x k`` kernel sits inside a ``W x W`` window exactly where
  ``dkolib.render.crop_center(window, k)`` takes it from (:func:`pad_to_window`
  is built from ``crop_center`` itself, so the two can never disagree).
* An element whose target is all zero (e.g. ``K-`` of an all-positive kernel)
  is *dark*: its target is "no light in the window".

Units: energies are fractions of the aperture energy (dimensionless); kernels
carry the units of the electronic conv weights; gains convert one into the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .io import save_torch, write_csv
from .render import crop_center

# ----------------------------------------------------------------- windows


def _crop_indices(window_px: int, k: int) -> torch.Tensor:
    """Flat indices (into a ``W*W`` window) of the ``k x k`` crop, row-major ``[k*k]``."""
    idx = torch.arange(window_px * window_px, dtype=torch.float64).reshape(1, window_px, window_px)
    flat = crop_center(idx, k).reshape(-1)
    out = flat.round().long()
    if out.numel() != k * k or len(set(out.tolist())) != k * k:
        raise RuntimeError("crop_center did not return a k x k block of distinct pixels")
    return out


def pad_to_window(target: torch.Tensor, window_px: int) -> torch.Tensor:
    """Zero-pad ``target [E, k, k]`` into ``[E, W, W]`` so that ``crop_center(out, k) == target``."""
    if target.dim() != 3 or target.shape[-1] != target.shape[-2]:
        raise ValueError(f"target must have shape [E, k, k], got {tuple(target.shape)}")
    e, k = target.shape[0], target.shape[-1]
    if window_px < k:
        raise ValueError(f"window_px ({window_px}) must be at least the kernel size ({k})")
    idx = _crop_indices(window_px, k).to(target.device)
    out = target.new_zeros(e, window_px * window_px)
    out[:, idx] = target.reshape(e, k * k)
    return out.reshape(e, window_px, window_px)


def crop_mask(window_px: int, k: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``[W, W]`` mask equal to 1 on the ``k x k`` crop, 0 elsewhere."""
    return pad_to_window(torch.ones(1, k, k, dtype=dtype, device=device), window_px)[0]


# ------------------------------------------------------------------ kernels


def split_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Signed kernels ``[C_out, C_in, k, k]`` -> non-negative targets ``[E, k, k]``.

    ``E = 2 * C_out * C_in``; ``targets[(o * C_in + i) * 2 + 0] = max(K[o, i], 0)`` and
    ``targets[(o * C_in + i) * 2 + 1] = max(-K[o, i], 0)`` (same units as ``weight``).
    """
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"weight must have shape [C_out, C_in, k, k], got {tuple(weight.shape)}")
    if not torch.isfinite(weight).all():
        raise ValueError("weight contains non-finite values")
    c_out, c_in, k, _ = weight.shape
    pos = weight.clamp_min(0.0)
    neg = (-weight).clamp_min(0.0)
    return torch.stack([pos, neg], dim=2).reshape(c_out * c_in * 2, k, k)


def merge_signed(elements: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """Inverse of :func:`split_kernel`: ``[E, h, w] -> [n_out, n_in, h, w]`` as ``K+ - K-``."""
    if elements.shape[0] != 2 * n_out * n_in:
        raise ValueError(f"expected {2 * n_out * n_in} elements, got {elements.shape[0]}")
    x = elements.reshape(n_out, n_in, 2, *elements.shape[1:])
    return x[:, :, 0] - x[:, :, 1]


def _dark_mask(target: torch.Tensor) -> torch.Tensor:
    return target.sum(dim=(-2, -1)) <= 0


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


# ------------------------------------------------------------------- losses


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


LOSSES: dict[str, Callable] = {"paper": paper_loss, "leakage": leakage_loss}


def stage2_loss(name: str, psf_window: torch.Tensor, target: torch.Tensor, leakage_weight: float = 1.0,
                reduction: str = "sum") -> torch.Tensor:
    """Dispatch to :func:`paper_loss` or :func:`leakage_loss` by name."""
    if name == "paper":
        return paper_loss(psf_window, target, reduction=reduction)
    if name == "leakage":
        return leakage_loss(psf_window, target, leakage_weight=leakage_weight, reduction=reduction)
    raise ValueError(f"unknown DKO loss {name!r}: choose 'paper' or 'leakage'")


# --------------------------------------------------------------------- gain


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


# ----------------------------------------------------------------- fidelity


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def fidelity_table(psf_window: torch.Tensor, weight: torch.Tensor, gain: torch.Tensor | None = None,
                   psf_render: torch.Tensor | None = None) -> pd.DataFrame:
    """Per-element and per-output-channel fidelity of an optical kernel bank.

    Args:
        psf_window: ``[E, W, W]`` PSFs on the loss window (aperture-energy units).
        weight: ``[C_out, C_in, k, k]`` electronic kernels.
        gain: ``[C_out]`` electronic gains; default :func:`fit_gain` on the crop.
        psf_render: optional ``[E, R, R]`` PSFs on a larger (render) window for ``eff_render``.

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
    * ``gain`` (channel rows), ``target_sum`` (element rows: sum of T_e).
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
                         eff_render=float(eff_ren[e]), gain=float("nan"), target_sum=float(t.sum())))
    for o in range(c_out):
        p = signed[o].reshape(-1).numpy()
        kk = weight[o].reshape(-1).numpy()
        nk = float(np.linalg.norm(kk))
        err = float(np.linalg.norm(float(gain[o]) * p - kk) / nk) if nk > 0 else float("nan")
        sl = slice(o * 2 * c_in, (o + 1) * 2 * c_in)
        rows.append(dict(level="channel", index=o, out_channel=o, in_channel=-1, sign=-1,
                         dark=bool(nk == 0), norm_err=err, corr=_pearson(p, kk),
                         eff_crop=float(eff_crop[sl].mean()), eff_window=float(eff_win[sl].mean()),
                         eff_render=float(np.mean(eff_ren[sl])), gain=float(gain[o]),
                         target_sum=float(np.abs(kk).sum())))
    return pd.DataFrame(rows)


def summarize_fidelity(fidelity: pd.DataFrame) -> dict:
    """Means of the channel-level (signed, gain-restored) and element-level fidelity."""
    lvl = fidelity["level"]
    ch = fidelity[lvl == "channel"]
    el = fidelity[(lvl == "element") & (~fidelity["dark"].astype(bool))]
    dk = fidelity[(lvl == "element") & (fidelity["dark"].astype(bool))]
    return {
        "channel_norm_err_mean": float(ch["norm_err"].mean()),
        "channel_corr_mean": float(ch["corr"].mean()),
        "element_norm_err_mean": float(el["norm_err"].mean()),
        "element_corr_mean": float(el["corr"].mean()),
        "eff_crop_mean": float(el["eff_crop"].mean()),
        "eff_window_mean": float(el["eff_window"].mean()),
        "eff_render_mean": float(el["eff_render"].mean()),
        "n_dark": int(len(dk)),
        "dark_eff_crop_mean": float(dk["eff_crop"].mean()) if len(dk) else float("nan"),
    }


# ---------------------------------------------------------------- synthesis


@dataclass
class SynthesisResult:
    """Output of :func:`synthesize`.

    Attributes:
        array: the optimised ``MetasurfaceArray`` (E = 2 C_out C_in elements).
        history: one row per step: ``step`` (1-based), ``loss`` (sum over elements),
            ``loss_mean``, ``corr_mean``/``eff_crop_mean``/``eff_window_mean`` (lit elements, of
            the PSF *before* that step's update), ``seconds`` (cumulative wall time).
        fidelity: :func:`fidelity_table` of the final array.
        gain: ``[C_out]`` closed-form gains fitted on the final crop.
        psf_crop_signed: ``[C_out, C_in, k, k]`` final signed crop kernels (aperture units).
        seconds: wall seconds of the optimisation (including resumed parts).
        steps: optimisation steps done.
    """

    array: nn.Module
    history: pd.DataFrame
    fidelity: pd.DataFrame
    gain: torch.Tensor
    psf_crop_signed: torch.Tensor
    seconds: float
    steps: int


def make_atom(optics_cfg):
    """The meta-atom model named by ``optics_cfg.meta_atom`` ('tio2' library or 'ideal')."""
    from . import metaatoms

    if optics_cfg.meta_atom == "ideal":
        return metaatoms.IdealPhaseAtom()
    return metaatoms.MetaAtomLibrary.load()


def _default_psf_fn():
    from .psf import psf as psf_fn

    return psf_fn


def _flops_per_step(optics_cfg, window_px: int, n_elements: int, engine: str) -> float | None:
    """Forward + backward PSF FLOPs of one stage-2 step (backward counted as 2x forward)."""
    try:
        from .psf import count_psf_flops
    except ImportError:
        return None
    per = float(count_psf_flops(optics_cfg.n_cells, window_px, optics_cfg.subpixel, engine, optics_cfg=optics_cfg))
    return 3.0 * per * n_elements


def _targets_digest(targets: torch.Tensor) -> str:
    return hashlib.sha1(targets.detach().to(torch.float64).cpu().numpy().tobytes()).hexdigest()


def synthesize(weight: torch.Tensor, optics_cfg, dko_cfg, atom=None, engine: str = "fast",
               generator: torch.Generator | None = None, progress: bool = True,
               ckpt_path: str | Path | None = None, log_csv: str | Path | None = None,
               budget=None, *, array: nn.Module | None = None, psf_fn: Callable | None = None,
               window_px: int | None = None, ckpt_every: int = 50, lr: float | None = None,
               loss: str | None = None, steps: int | None = None) -> SynthesisResult:
    """Fit all metasurfaces of an array to the split kernels of ``weight`` (DKO stage 2).

    Args:
        weight: ``[C_out, C_in, k, k]`` trained first-layer kernels (k = optics_cfg.kernel_size).
        optics_cfg: :class:`dkolib.config.OpticsConfig`.
        dko_cfg: :class:`dkolib.config.DKOConfig` (``steps``, ``lr``, ``loss``, ``leakage_weight``,
            ``init``); ``lr``/``loss``/``steps`` keyword arguments override it.
        atom: meta-atom model; default from ``optics_cfg.meta_atom``.
        engine: PSF engine, ``'fast'`` or ``'reference'``.
        generator: seeds the array's initialisation (random init).
        progress: show a tqdm bar.
        ckpt_path: checkpoint file, written atomically every ``ckpt_every`` steps and at the
            end; if it exists the run resumes from it (same result as an uninterrupted run).
        log_csv: history CSV, rewritten atomically at every checkpoint and at the end.
        budget: optional :class:`dkolib.budget.BudgetMeter`; optimisation steps are timed
            in it and their PSF FLOPs (forward + 2x backward) added as ``'optics'``.
        array: an existing array to optimise (default: a new ``MetasurfaceArray``).
        psf_fn: PSF function with ``dkolib.psf.psf``'s signature (for tests).
        window_px: PSF window of the loss (default ``optics_cfg.loss_window_px``).

    All elements are optimised together with Adam (no weight decay: the parameters are
    latent radii, decaying them towards 0 has no physical meaning). The loss is the
    *sum* over elements, so each element follows exactly the trajectory it would
    follow alone (Adam is per-parameter).
    """
    from tqdm import tqdm

    k = int(optics_cfg.kernel_size)
    if weight.dim() != 4 or weight.shape[-1] != k or weight.shape[-2] != k:
        raise ValueError(f"weight must be [C_out, C_in, {k}, {k}] (optics.kernel_size), got {tuple(weight.shape)}")
    c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
    steps = int(dko_cfg.steps if steps is None else steps)
    lr = float(dko_cfg.lr if lr is None else lr)
    loss_name = dko_cfg.loss if loss is None else loss
    if loss_name not in LOSSES:
        raise ValueError(f"unknown DKO loss {loss_name!r}: choose one of {sorted(LOSSES)}")
    window_px = int(optics_cfg.loss_window_px if window_px is None else window_px)
    if window_px < k:
        raise ValueError(f"loss window ({window_px}) must be at least kernel_size ({k})")
    if ckpt_every < 1:
        raise ValueError(f"ckpt_every must be >= 1, got {ckpt_every}")
    psf_fn = psf_fn or _default_psf_fn()
    weight = weight.detach().to(torch.float32).cpu()
    targets = split_kernel(weight)

    if array is None:
        from .metasurface import MetasurfaceArray

        atom = atom if atom is not None else make_atom(optics_cfg)
        array = MetasurfaceArray(c_out, c_in, optics_cfg, atom, init=dko_cfg.init, generator=generator)
    n_el = int(array.latent.shape[0])
    if n_el != targets.shape[0]:
        raise ValueError(f"array has {n_el} elements but weight needs {targets.shape[0]}")
    targets = targets.to(array.latent.device)
    opt = torch.optim.Adam([array.latent], lr=lr)
    meta = {"n_elements": n_el, "loss": loss_name, "lr": lr, "window_px": window_px, "engine": engine,
            "leakage_weight": float(dko_cfg.leakage_weight), "targets_sha1": _targets_digest(targets),
            "latent_shape": tuple(array.latent.shape)}

    start, elapsed, rows = 0, 0.0, []
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=array.latent.device, weights_only=False)
        diff = {key: (state["meta"].get(key), val) for key, val in meta.items() if state["meta"].get(key) != val}
        if diff:
            raise ValueError(f"checkpoint {ckpt_path} belongs to a different synthesis run: {diff}")
        if state["step"] > steps:
            raise ValueError(f"checkpoint {ckpt_path} is at step {state['step']} > requested steps {steps}")
        with torch.no_grad():
            array.latent.copy_(state["latent"])
        opt.load_state_dict(state["optimizer"])
        start, elapsed, rows = int(state["step"]), float(state["seconds"]), list(state["history"])
        if budget is not None and state.get("budget") is not None:
            budget.load_state_dict(state["budget"])

    def save_ckpt(step: int) -> None:
        if ckpt_path is not None:
            save_torch({"step": step, "latent": array.latent.detach().clone(), "optimizer": opt.state_dict(),
                        "seconds": elapsed, "history": rows, "meta": meta,
                        "budget": budget.state_dict() if budget is not None else None}, ckpt_path)
        if log_csv is not None:
            write_csv(pd.DataFrame(rows, columns=HISTORY_COLUMNS), log_csv)

    flops = _flops_per_step(optics_cfg, window_px, n_el, engine) if budget is not None else None
    lit = ~_dark_mask(targets)
    t_flat = targets.reshape(n_el, -1)
    bar = tqdm(range(start, steps), desc=f"DKO stage 2 ({loss_name})", disable=not progress,
               initial=start, total=steps)
    for step in bar:
        t0 = time.perf_counter()
        ctx = budget.timing() if budget is not None else _null()
        with ctx:
            opt.zero_grad(set_to_none=True)
            p = psf_fn(array, array.wavelengths_m, optics_cfg, window_px, engine=engine, normalize=True)
            per = stage2_loss(loss_name, p, targets, dko_cfg.leakage_weight, reduction="none")
            total = per.sum()
            if not torch.isfinite(total):
                raise FloatingPointError(f"DKO loss became {total.item()} at step {step + 1}")
            total.backward()
            opt.step()
        if budget is not None and flops is not None:
            budget.add_flops(flops, "optics")
        elapsed += time.perf_counter() - t0
        with torch.no_grad():
            crop = crop_center(p.detach(), k).reshape(n_el, -1)
            corr = _batched_pearson(crop, t_flat)
            rows.append({"step": step + 1, "loss": float(total), "loss_mean": float(per.mean()),
                         "corr_mean": float(corr[lit].mean()) if lit.any() else float("nan"),
                         "eff_crop_mean": float(crop.sum(1)[lit].mean()) if lit.any() else float("nan"),
                         "eff_window_mean": float(p.detach().sum((-2, -1))[lit].mean()) if lit.any() else float("nan"),
                         "seconds": elapsed})
        if progress:
            bar.set_postfix(loss=f"{rows[-1]['loss_mean']:.3e}", corr=f"{rows[-1]['corr_mean']:.3f}")
        if (step + 1) % ckpt_every == 0 and step + 1 < steps:
            save_ckpt(step + 1)
    bar.close()
    save_ckpt(steps)

    with torch.no_grad():
        p_win = psf_fn(array, array.wavelengths_m, optics_cfg, window_px, engine=engine, normalize=True)
        p_ren = None
        if optics_cfg.render_window_px > window_px:
            p_ren = psf_fn(array, array.wavelengths_m, optics_cfg, optics_cfg.render_window_px,
                           engine=engine, normalize=True)
    signed = merge_signed(crop_center(p_win.detach().cpu(), k), c_out, c_in).to(torch.float32)
    gain = fit_gain(signed, weight)
    fid = fidelity_table(p_win, weight, gain, p_ren)
    return SynthesisResult(array=array, history=pd.DataFrame(rows, columns=HISTORY_COLUMNS), fidelity=fid,
                           gain=gain, psf_crop_signed=signed, seconds=elapsed, steps=steps)


HISTORY_COLUMNS = ["step", "loss", "loss_mean", "corr_mean", "eff_crop_mean", "eff_window_mean", "seconds"]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _batched_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = torch.sqrt((a * a).sum(1) * (b * b).sum(1))
    return torch.where(den > 0, (a * b).sum(1) / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.full_like(den, float("nan")))


# ------------------------------------------------------------ persistence


def save_array(array: nn.Module, path: str | Path, optics_cfg=None, **extra) -> Path:
    """Save an array's state dict and its shape atomically (see :func:`load_array`)."""
    payload = {"state_dict": {k: v.detach().cpu() for k, v in array.state_dict().items()},
               "n_out": int(getattr(array, "n_out", 0)), "n_in": int(getattr(array, "n_in", 0)),
               "optics": dataclasses.asdict(optics_cfg) if optics_cfg is not None else None}
    payload.update(extra)
    return save_torch(payload, path)


def load_array(path: str | Path, optics_cfg, atom=None) -> nn.Module:
    """Rebuild a ``MetasurfaceArray`` saved by :func:`save_array`."""
    from .metasurface import MetasurfaceArray

    payload = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "n_out", "n_in"):
        if key not in payload:
            raise KeyError(f"{path} is not an array file written by save_array (missing '{key}')")
    atom = atom if atom is not None else make_atom(optics_cfg)
    array = MetasurfaceArray(payload["n_out"], payload["n_in"], optics_cfg, atom, init="lens")
    array.load_state_dict(payload["state_dict"])
    return array
