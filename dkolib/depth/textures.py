"""Anti-aliased texturing for the synthetic scenes: mip-mapped photographs and filtered patterns.

* The photographs that scikit-image bundles (no download) are loaded once
  (:func:`_textures`), as grey detail maps around 1 and as colour billboards,
  each as a box-filter mip pyramid (:class:`_Pyramid`).
* :func:`_sample` looks a pyramid up at surface coordinates in metres, choosing
  the level from the pixel's footprint on the surface, so distant texture is
  averaged rather than aliased.
* :func:`_pulse` / :func:`_band` are box-filtered periodic / single intervals
  (windows, lane markings); :func:`_value_noise` a smooth random field.

All sizes are in metres on the surface; images are float32 in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class _Pyramid:
    """Mip-map pyramid of one image, flattened: level l is (h >> l) x (w >> l) x C."""

    flat: np.ndarray  # [sum of level sizes, C] float32
    offsets: np.ndarray  # [L] int64
    heights: np.ndarray  # [L] int64
    widths: np.ndarray  # [L] int64

    @property
    def levels(self) -> int:
        return len(self.offsets)


def _build_pyramid(img: np.ndarray) -> _Pyramid:
    """Box-filter mip pyramid of a float image [h, w, C] (odd edges are dropped)."""
    levels = [img.astype(np.float32)]
    while min(levels[-1].shape[:2]) >= 2:
        a = levels[-1]
        h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
        a = a[:h, :w]
        levels.append(0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]))
    sizes = [lv.shape[0] * lv.shape[1] for lv in levels]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    flat = np.concatenate([lv.reshape(-1, lv.shape[2]) for lv in levels], axis=0)
    return _Pyramid(
        flat=np.ascontiguousarray(flat),
        offsets=offsets,
        heights=np.array([lv.shape[0] for lv in levels], dtype=np.int64),
        widths=np.array([lv.shape[1] for lv in levels], dtype=np.int64),
    )


def _sample(pyr: _Pyramid, s: np.ndarray, t: np.ndarray, texel_m: float, footprint_m: np.ndarray,
            wrap: bool = True) -> np.ndarray:
    """Trilinear-in-level, nearest-in-texel lookup of ``pyr`` at surface coords (metres).

    ``s`` runs along image columns, ``t`` along rows; ``texel_m`` is the size of
    one level-0 texel on the surface; ``footprint_m`` the pixel's footprint.
    Returns [P, C] float32.
    """
    lod = np.log2(np.maximum(footprint_m / texel_m, 1.0))
    lod = np.minimum(lod, pyr.levels - 1)
    l0 = np.floor(lod).astype(np.int64)
    frac = (lod - l0).astype(np.float32)[:, None]
    l1 = np.minimum(l0 + 1, pyr.levels - 1)
    out = None
    for lv, weight in ((l0, 1.0 - frac), (l1, frac)):
        scale = texel_m * (2.0 ** lv)
        hs, ws = pyr.heights[lv], pyr.widths[lv]
        iu = np.floor(s / scale).astype(np.int64)
        iv = np.floor(t / scale).astype(np.int64)
        if wrap:
            iu %= ws
            iv %= hs
        else:
            np.clip(iu, 0, ws - 1, out=iu)
            np.clip(iv, 0, hs - 1, out=iv)
        val = pyr.flat[pyr.offsets[lv] + iv * ws + iu] * weight
        out = val if out is None else out + val
    return out


# grey detail textures: (skimage loader, metres covered by the 512-px photo, transpose, contrast)
_DETAIL_SPECS = {
    "brick": ("brick", 0.9, True, 0.35),  # bricks lie horizontally on a wall after transposing
    "pavers": ("brick", 1.2, False, 0.35),
    "grass": ("grass", 0.6, False, 0.35),
    "gravel": ("gravel", 0.5, False, 0.35),  # asphalt aggregate
    "concrete": ("moon", 4.0, False, 0.12),  # stucco / concrete; low contrast hides the craters
}


_DETAIL_NAMES = tuple(_DETAIL_SPECS)


_PHOTO_NAMES = ("coffee", "chelsea", "astronaut", "rocket")


@lru_cache(maxsize=1)
def _textures() -> tuple[dict, dict]:
    """Load the bundled photographs once per process (no network access)."""
    import skimage.data

    details = {}
    for key, (loader, metres, transpose, contrast) in _DETAIL_SPECS.items():
        img = getattr(skimage.data, loader)().astype(np.float32) / 255.0
        if img.ndim == 3:
            img = img.mean(axis=2)
        if transpose:
            img = img.T
        # detail map around 1 (zero-mean contrast), mirror-tiled so that it is seamless
        z = np.clip((img - img.mean()) / (img.std() + 1e-6), -2.5, 2.5)  # tame outliers (moon craters)
        detail = 1.0 + contrast * z
        tiled = np.concatenate([detail, detail[:, ::-1]], axis=1)
        tiled = np.concatenate([tiled, tiled[::-1]], axis=0)
        details[key] = (_build_pyramid(tiled[..., None]), metres / img.shape[0])
    photos = {}
    for name in _PHOTO_NAMES:
        img = getattr(skimage.data, name)().astype(np.float32) / 255.0
        photos[name] = _build_pyramid(img[..., :3])
    return details, photos


def _pulse(coord: np.ndarray, period, start, stop, footprint: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] of the periodic interval [start, stop) (mod period), box-filtered."""
    f = np.mod(coord, period)
    inside = np.minimum(f - start, stop - f)
    cov = np.clip(inside / np.maximum(footprint, 1e-6) + 0.5, 0.0, 1.0)
    duty = (np.asarray(stop) - np.asarray(start)) / np.asarray(period)
    blend = np.clip(footprint / np.asarray(period), 0.0, 1.0)
    return cov * (1.0 - blend) + duty * blend


def _band(coord: np.ndarray, lo, hi, footprint: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] of the interval [lo, hi), box-filtered by ``footprint``."""
    inside = np.minimum(coord - lo, hi - coord)
    return np.clip(inside / np.maximum(footprint, 1e-6) + 0.5, 0.0, 1.0)


def _value_noise(rng: np.random.Generator, shape: tuple, cells: tuple) -> np.ndarray:
    """Smooth random field in [0, 1] of ``shape``, bilinear over a ``cells`` grid."""
    g = rng.random((cells[0] + 1, cells[1] + 1))
    y = np.linspace(0, cells[0], shape[0], endpoint=False)
    x = np.linspace(0, cells[1], shape[1], endpoint=False)
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    e = g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + e * fx) * fy
