"""Sensor images through a metasurface array: signed kernels, optical convolution, sensor noise.

Conventions
-----------
* PSF windows follow :mod:`dkolib.optics.propagation`: pixel ``W // 2`` is on the optical axis.
  :func:`crop_center` keeps that pixel at the centre of the crop.
* The sensor image of input channel ``i`` through element ``(o, i, s)`` is
  ``y[p] = sum_m x[p - W//2 + m] psf[m]`` (2-D), i.e. exactly
  ``torch.nn.functional.conv2d(x, psf, padding=W//2)`` (cross-correlation with the
  PSF used as the weight, as the DKO kernels are defined), zero outside the image.
  Output pixels are read at ``stride``; the output is ``ceil(H / stride)`` high.
* Units: images are intensities in ``[0, 1]``; PSFs are fractions of the aperture
  energy per pixel, so a white scene through a lossless lens gives ~1 per pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def crop_center(psf: torch.Tensor, k: int) -> torch.Tensor:
    """Central ``k x k`` crop of the last two axes, keeping the on-axis pixel ``W // 2`` central.

    For ``W`` and ``k`` of equal parity this is the symmetric crop; for even ``W``
    and odd ``k`` (e.g. 7 from the 14 x 14 loss window) it is pixels
    ``W//2 - k//2 .. W//2 + k//2``.
    """
    h, w = psf.shape[-2:]
    if k > h or k > w or k < 1:
        raise ValueError(f"cannot crop {k}x{k} from a {h}x{w} window")
    t, l = h // 2 - k // 2, w // 2 - k // 2
    return psf[..., t:t + k, l:l + k]


def signed_kernels(psf: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """``psf [E, W, W]`` (E = n_out * n_in * 2, element (o, i, s)) -> ``pos - neg`` ``[n_out, n_in, W, W]``."""
    if psf.dim() != 3 or psf.shape[0] != n_out * n_in * 2:
        raise ValueError(f"psf must be [n_out*n_in*2 = {n_out * n_in * 2}, W, W], got {tuple(psf.shape)}")
    p = psf.reshape(n_out, n_in, 2, psf.shape[-2], psf.shape[-1])
    return p[:, :, 0] - p[:, :, 1]


def split_psf(psf: torch.Tensor, n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``psf [E, W, W]`` -> ``(psf_pos, psf_neg)``, each ``[n_out, n_in, W, W]``."""
    if psf.dim() != 3 or psf.shape[0] != n_out * n_in * 2:
        raise ValueError(f"psf must be [n_out*n_in*2 = {n_out * n_in * 2}, W, W], got {tuple(psf.shape)}")
    p = psf.reshape(n_out, n_in, 2, psf.shape[-2], psf.shape[-1])
    return p[:, :, 0], p[:, :, 1]


class SensorNoise:
    """Poisson shot noise + Gaussian read noise, in signal units, straight-through for gradients.

    A signal ``s`` (1 = a white pixel through an ideal delta PSF) produces
    ``n_e ~ Poisson(photons_per_pixel * max(s, 0)) + Normal(0, read_noise_e^2)``
    electrons; the returned value is ``n_e / photons_per_pixel`` (so its mean is
    ``s`` and its variance ``s / ppp + (read_noise_e / ppp)^2``). The forward value
    is noisy; the gradient is that of the identity (straight-through), so the
    noise can be used in training.
    """

    def __init__(self, photons_per_pixel: float, read_noise_e: float = 0.0):
        if not photons_per_pixel > 0:
            raise ValueError(f"photons_per_pixel must be > 0, got {photons_per_pixel}")
        if read_noise_e < 0:
            raise ValueError(f"read_noise_e must be >= 0, got {read_noise_e}")
        self.photons_per_pixel = float(photons_per_pixel)
        self.read_noise_e = float(read_noise_e)

    def __call__(self, signal: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            s = signal.detach()
            lam = (s.clamp_min(0) * self.photons_per_pixel).to(torch.float64 if s.dtype == torch.float64
                                                                else torch.float32)
            electrons = torch.poisson(lam, generator=generator)
            if self.read_noise_e > 0:
                electrons = electrons + self.read_noise_e * torch.randn(
                    lam.shape, generator=generator, dtype=lam.dtype, device=lam.device)
            noisy = (electrons / self.photons_per_pixel).to(s.dtype)
        return signal + (noisy - s)

    def __repr__(self) -> str:
        return f"SensorNoise(photons_per_pixel={self.photons_per_pixel:g}, read_noise_e={self.read_noise_e:g})"


def _corr_direct(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    """x [B, C, H, W]; w [C, G, k, k] -> [B, C, G, Ho, Wo] per-channel correlations ('same', strided)."""
    B, C, H, Wd = x.shape
    G, k = w.shape[1], w.shape[-1]
    out = F.conv2d(x, w.reshape(C * G, 1, k, k), stride=stride, padding=k // 2, groups=C)
    Ho, Wo = math.ceil(H / stride), math.ceil(Wd / stride)
    return out[..., :Ho, :Wo].reshape(B, C, G, Ho, Wo)


def _corr_fft(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    """FFT version of :func:`_corr_direct` (same result; cheaper for large kernels)."""
    H, Wd = x.shape[-2:]
    k = w.shape[-1]
    a = k // 2
    # y[p] = sum_m xpad[p + m] w[m] with xpad = x shifted by a; as a linear convolution with the flipped kernel
    fh, fw = H + 2 * k, Wd + 2 * k
    X = torch.fft.rfft2(x, s=(fh, fw))                       # [B, C, fh, fw//2+1]
    K = torch.fft.rfft2(torch.flip(w, (-2, -1)), s=(fh, fw))  # [C, G, ...]
    full = torch.fft.irfft2(X[:, :, None] * K[None], s=(fh, fw))
    # full[n] = sum_j x[j] wflip[n - j] = sum_m x[n - (k-1) + m] w[m]; want x[p - a + m] -> n = p + k - 1 - a
    off = k - 1 - a
    y = full[..., off:off + H, off:off + Wd]
    return y[..., ::stride, ::stride]


def optical_conv(images: torch.Tensor, psf_pos: torch.Tensor, psf_neg: torch.Tensor, stride: int = 2,
                 gain: torch.Tensor | None = None, noise: SensorNoise | None = None,
                 generator: torch.Generator | None = None, method: str = "auto") -> torch.Tensor:
    """Optical first layer: sensor images of the +/- metasurfaces, noise, subtraction, gain.

    Args:
        images: ``[B, C_in, H, W]`` scene intensities in ``[0, 1]``.
        psf_pos, psf_neg: ``[C_out, C_in, w, w]`` PSFs (fraction of aperture energy per pixel).
        stride: sensor read-out stride (2 for ResNet conv1).
        gain: electronic scale (None: 1): ``[C_out]`` applied after the subtraction, or
            ``[C_out, C_in, 2]`` applied to each metasurface's read-out (after its noise,
            before the subtraction; index 0 the + and 1 the - metasurface).
        noise: :class:`SensorNoise` applied to each of the ``2 C_in C_out`` sensor images
            before subtraction and summation over ``C_in`` (None: noiseless).
        generator: random generator for the noise.
        method: ``'direct'`` (conv2d), ``'fft'`` or ``'auto'`` (FFT when ``w > 15``).
    Returns:
        ``[B, C_out, ceil(H / stride), ceil(W / stride)]``.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [B, C_in, H, W], got {tuple(images.shape)}")
    if psf_pos.shape != psf_neg.shape or psf_pos.dim() != 4 or psf_pos.shape[-1] != psf_pos.shape[-2]:
        raise ValueError(f"psf_pos and psf_neg must both be [C_out, C_in, w, w], got {tuple(psf_pos.shape)} "
                         f"and {tuple(psf_neg.shape)}")
    C_out, C_in, k = psf_pos.shape[0], psf_pos.shape[1], psf_pos.shape[-1]
    if images.shape[1] != C_in:
        raise ValueError(f"images have {images.shape[1]} channels but the PSFs expect C_in={C_in}")
    if gain is not None and tuple(gain.shape) not in ((C_out,), (C_out, C_in, 2)):
        raise ValueError(f"gain must be [C_out={C_out}] or [C_out, C_in, 2] = [{C_out}, {C_in}, 2], "
                         f"got {tuple(gain.shape)}")
    per_element = gain is not None and gain.dim() == 3
    if method not in ("auto", "direct", "fft"):
        raise ValueError(f"method must be 'auto', 'direct' or 'fft', got {method!r}")
    use_fft = method == "fft" or (method == "auto" and k > 15)
    corr = _corr_fft if use_fft else _corr_direct
    psf_pos = psf_pos.to(images.dtype)
    psf_neg = psf_neg.to(images.dtype)
    if noise is None:
        # linear: scale, subtract and sum over C_in before correlating (one conv2d)
        if per_element:
            g = gain.to(images.dtype)
            signed = psf_pos * g[..., 0, None, None] - psf_neg * g[..., 1, None, None]
        else:
            signed = psf_pos - psf_neg
        if use_fft:
            y = corr(images, signed.permute(1, 0, 2, 3), stride).sum(1)
        else:
            y = F.conv2d(images, signed, stride=stride, padding=k // 2)
            y = y[..., :math.ceil(images.shape[-2] / stride), :math.ceil(images.shape[-1] / stride)]
    else:
        w = torch.stack([psf_pos, psf_neg], 2).permute(1, 0, 2, 3, 4).reshape(C_in, C_out * 2, k, k)
        s = corr(images, w, stride)  # [B, C_in, C_out*2, Ho, Wo]
        s = noise(s, generator=generator)
        s = s.reshape(s.shape[0], C_in, C_out, 2, s.shape[-2], s.shape[-1])
        if per_element:  # each read-out is scaled with its noise, as an amplifier would
            s = s * gain.to(s.dtype).permute(1, 0, 2)[None, :, :, :, None, None]
        y = (s[:, :, :, 0] - s[:, :, :, 1]).sum(1)
    if gain is not None and not per_element:
        y = y * gain.to(y.dtype).view(1, -1, 1, 1)
    return y


__all__ = ["SensorNoise", "crop_center", "optical_conv", "signed_kernels", "split_psf"]
