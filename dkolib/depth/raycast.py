"""Exact ray casting against the scene's solids (boxes, vertical cylinders, spheres).

World frame: x right, y down, z forward, metres, camera at the origin; rays are
unit directions ``d [P, 3]`` from the camera centre. :func:`_intersect` returns
the ray length to the first hit (``inf`` for a miss) and the surface normal;
:func:`_pixel_rect` bounds the pixels a solid can cover, so only those rays are
tested.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .scenes import _Solid


_EPS = 1e-9


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world rotation: pitch about x (positive looks down), then yaw about y."""
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return r_yaw @ r_pitch


def _pixel_rect(solid: _Solid, rot: np.ndarray, k: np.ndarray, height: int, width: int):
    """Rows/cols (half-open) of the pixels whose rays may hit ``solid``; None if none can."""
    pc = solid.corners() @ rot  # world -> camera (rot is orthonormal): p_c = R^T p_w
    z = pc[:, 2]
    if np.all(z <= 0.05):
        return None
    if np.any(z <= 0.05):
        return 0, height, 0, width  # straddles the camera plane: test every pixel
    u = k[0, 0] * pc[:, 0] / z + k[0, 2]
    v = k[1, 1] * pc[:, 1] / z + k[1, 2]
    c0, c1 = int(math.floor(u.min() - 0.5)), int(math.ceil(u.max() + 0.5))
    r0, r1 = int(math.floor(v.min() - 0.5)), int(math.ceil(v.max() + 0.5))
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, width), min(r1, height)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def _intersect(solid: _Solid, d: np.ndarray):
    """Ray parameter ``t`` (inf where missed) and unit normals for rays ``origin + t d``; d: [3, h, w]."""
    if solid.kind == "box":
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t1 = solid.a[:, None, None] * inv
            t2 = solid.b[:, None, None] * inv
        tnear = np.minimum(t1, t2)
        tfar = np.maximum(t1, t2)
        axis = np.argmax(tnear, axis=0)
        t_in = np.max(tnear, axis=0)
        t_out = np.min(tfar, axis=0)
        hit = (t_out >= t_in) & (t_in > 1e-3)
        t = np.where(hit, t_in, np.inf)
        normal = np.zeros_like(d)
        sign = -np.sign(np.take_along_axis(d, axis[None], axis=0)[0])
        for ax in range(3):
            normal[ax] = np.where(axis == ax, sign, 0.0)
        return t, normal
    if solid.kind == "cyl":
        xc, ytop, zc = solid.a
        r, ybot = solid.b[0], solid.b[1]
        a = d[0] ** 2 + d[2] ** 2
        b = d[0] * xc + d[2] * zc
        c = xc * xc + zc * zc - r * r
        disc = b * b - a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (b - np.sqrt(disc)) / a
        y = t * d[1]
        hit = (disc >= 0) & (t > 1e-3) & (y >= ytop) & (y <= ybot)
        t = np.where(hit, t, np.inf)
        normal = np.stack([t * d[0] - xc, np.zeros_like(t), t * d[2] - zc]) / r
        return t, normal
    centre, r = solid.a, solid.b[0]
    a = (d * d).sum(axis=0)
    b = np.tensordot(centre, d, axes=(0, 0))
    c = float(centre @ centre) - r * r
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        t = (b - np.sqrt(disc)) / a
    hit = (disc >= 0) & (t > 1e-3)
    t = np.where(hit, t, np.inf)
    normal = (t[None] * d - centre[:, None, None]) / r
    return t, normal
