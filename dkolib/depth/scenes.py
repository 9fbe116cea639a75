"""Synthetic KITTI-like RGB-D street scenes, ray cast per pixel (vectorised numpy).

A scene is a pure function of ``(seed, height, width)``: the same arguments give
the same RGB image and the same depth map on any machine with the same numpy.

Camera
    A pinhole camera with KITTI's intrinsics normalised by image size, exactly
    as Monodepth2 uses them for its 640 x 192 input (the full 1242 x 375 KITTI
    frame *resized*, not cropped): ``fx = 0.58 W``, ``fy = 1.92 H``,
    ``cx = 0.5 W``, ``cy = 0.5 H``. That is a horizontal field of view of about
    81.5 deg and a vertical one of about 29.2 deg at any ``height x width``, so
    a synthetic frame has the same geometry as a resized KITTI frame. The
    camera sits about 1.65 m above the ground (KITTI's colour cameras), looks
    along the road with a small random yaw and pitch, and is in one lane of
    the road.

Geometry (world frame: x right, y down, z forward, metres; camera at origin)
    Ground plane (asphalt road with lane markings, kerbs, sidewalks, grass
    verges); building blocks on both sides with window grids and, sometimes,
    billboards; cars (body, wheel blocks, glass cabin) parked or driving;
    crates and bins; poles and trees (vertical cylinders, spherical crowns).
    Every solid is an axis-aligned box, a vertical cylinder or a sphere, so
    every intersection is exact.

Texture
    The photographs that scikit-image bundles in its wheel (``brick``,
    ``grass``, ``gravel``, ``moon`` as grey detail maps; ``coffee``,
    ``chelsea``, ``astronaut``, ``rocket`` as colour billboards; nothing that
    needs a download) are mapped in *world* coordinates (metres), so their
    apparent scale shrinks with distance: a real monocular depth cue. They are
    mip-mapped by the pixel's footprint on the surface, so distant texture is
    averaged rather than aliased. Procedural patterns (windows, lane markings,
    value noise) are filtered the same way.

Lighting
    Sun (random elevation, azimuth and intensity) with Lambertian shading by
    the surface normal, hemispherical sky ambient, distance fog towards the
    horizon colour, exposure and white-balance jitter and mild sensor noise.
    No cast shadows.

Depth
    ``depth_m`` is the z-depth along the optical axis in metres (what KITTI's
    projected LiDAR ground truth measures), exact per pixel centre, capped at
    ``max_depth_m``. **Sky and everything beyond the cap get exactly
    ``max_depth_m``.** That choice keeps the supervised training target
    defined everywhere (the network learns "far" for sky, as a KITTI-trained
    network does), while Monodepth2's evaluation mask ``min < gt < max`` is a
    strict inequality, so those pixels are excluded from the metrics, just as
    KITTI's LiDAR gives no ground truth for sky. Use :func:`valid_depth_mask`
    for the same mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .raycast import _EPS, _intersect, _pixel_rect, _rotation
from .textures import _DETAIL_NAMES, _PHOTO_NAMES, _band, _pulse, _sample, _textures, _value_noise

KITTI_NORMALISED_K = np.array([[0.58, 0.0, 0.5], [0.0, 1.92, 0.5], [0.0, 0.0, 1.0]])
"""KITTI's intrinsics divided by image width (row 0) and height (row 1), as in Monodepth2."""
SCENE_VERSION = 1
"""Bumped whenever a change to this module changes the rendered scenes (stales caches)."""
KITTI_CAMERA_HEIGHT_M = 1.65
"""Height of KITTI's colour cameras above the road."""


def camera_intrinsics(height: int, width: int) -> np.ndarray:
    """Pinhole intrinsics ``K`` (3 x 3, pixels) of the synthetic camera at ``height x width``.

    KITTI's normalised intrinsics (Monodepth2's ``K``) scaled to the image:
    ``[[0.58 W, 0, 0.5 W], [0, 1.92 H, 0.5 H], [0, 0, 1]]``. Pixel ``(u, v)``
    (column, row) has its centre at ``(u + 0.5, v + 0.5)``.
    """
    _check_size(height, width)
    k = KITTI_NORMALISED_K.copy()
    k[0] *= width
    k[1] *= height
    return k


def valid_depth_mask(depth_m: np.ndarray, min_depth_m: float = 1e-3, max_depth_m: float = 80.0) -> np.ndarray:
    """Boolean mask of pixels with ground truth, ``min_depth_m < depth < max_depth_m`` (Monodepth2)."""
    depth_m = np.asarray(depth_m)
    return (depth_m > min_depth_m) & (depth_m < max_depth_m)


def _check_size(height: int, width: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if int(v) != v or v < 8:
            raise ValueError(f"scene {name} must be an integer >= 8 pixels, got {v!r}")


# --------------------------------------------------------------------------- textures


# --------------------------------------------------------------------------- scene layout

_PATTERN_NONE, _PATTERN_WINDOWS, _PATTERN_PHOTO = 0, 1, 2


@dataclass
class _Material:
    tint: tuple
    detail: str | None = None
    detail_gain: float = 1.0
    pattern: int = _PATTERN_NONE
    params: tuple = (0.0,) * 6  # windows: floor h, sill, top, col period, col width, offset
    photo: str | None = None
    photo_rect: tuple = (0.0, 0.0, 1.0, 1.0)  # s0, t0, width, height (metres, face coords)
    gloss: float = 0.0  # how much sky the surface reflects (glass, paint)


@dataclass
class _Solid:
    kind: str  # "box" | "cyl" | "sphere"
    a: np.ndarray  # box: min corner; cyl: (xc, y_top, zc); sphere: centre
    b: np.ndarray  # box: max corner; cyl: (radius, y_bottom, 0); sphere: (radius, 0, 0)
    material: _Material

    def corners(self) -> np.ndarray:
        if self.kind == "box":
            lo, hi = self.a, self.b
        elif self.kind == "cyl":
            r = self.b[0]
            lo = np.array([self.a[0] - r, self.a[1], self.a[2] - r])
            hi = np.array([self.a[0] + r, self.b[1], self.a[2] + r])
        else:
            r = self.b[0]
            lo, hi = self.a - r, self.a + r
        return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _box(lo, hi, mat) -> _Solid:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return _Solid("box", np.minimum(lo, hi), np.maximum(lo, hi), mat)


def _rand_tint(rng, base, spread) -> tuple:
    c = np.clip(np.asarray(base) * (1.0 + rng.uniform(-spread, spread, 3)), 0.02, 0.98)
    return tuple(float(x) for x in c)


@dataclass
class _Layout:
    cam_h: float
    yaw: float
    pitch: float
    road: tuple  # x_left, x_right (road surface between kerbs)
    lanes: np.ndarray  # x of dashed lane separators
    dash: tuple  # dash length, period, phase (m)
    sidewalk: tuple  # widths left, right (0 = none)
    asphalt: tuple
    pavement: tuple
    verge: tuple
    solids: list
    sun_dir: np.ndarray  # unit vector towards the sun (world, y down)
    sun: float
    ambient: float
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    fog_m: float
    exposure: float
    white: np.ndarray


def _layout(rng: np.random.Generator) -> _Layout:
    kind = rng.choice(["urban", "suburban", "rural"], p=[0.5, 0.3, 0.2])
    cam_h = KITTI_CAMERA_HEIGHT_M + rng.uniform(-0.05, 0.05)
    yaw = rng.uniform(-0.12, 0.12)
    pitch = rng.normal(0.0, 0.012)
    ground = cam_h  # y of the road surface (y points down)

    n_lanes = int(rng.integers(1, 5))
    lane_w = rng.uniform(3.0, 3.7)
    my_lane = int(rng.integers(0, n_lanes))
    x_left = -(my_lane + rng.uniform(0.35, 0.65)) * lane_w
    x_right = x_left + n_lanes * lane_w
    lanes = x_left + lane_w * np.arange(1, n_lanes)
    dash_len = rng.uniform(2.0, 4.0)
    dash = (dash_len, dash_len + rng.uniform(4.0, 9.0), rng.uniform(0, 10))

    if kind == "rural":
        sidewalk = (0.0, 0.0)
    else:
        sidewalk = (rng.uniform(1.5, 4.5), rng.uniform(1.5, 4.5))
    asphalt = _rand_tint(rng, (0.30, 0.30, 0.31), 0.25)
    pavement = _rand_tint(rng, (0.55, 0.53, 0.50), 0.2)
    verge = _rand_tint(rng, (0.28, 0.42, 0.18), 0.25)
    solids: list[_Solid] = []
    z_far = 150.0

    # kerbs: raised sidewalk slabs along the road
    kerb_h = rng.uniform(0.08, 0.16)
    for side, w in ((-1, sidewalk[0]), (1, sidewalk[1])):
        if w <= 0:
            continue
        x0 = x_left if side < 0 else x_right
        mat = _Material(pavement, detail="pavers" if rng.random() < 0.5 else "concrete")
        solids.append(_box((x0, ground - kerb_h, -5.0), (x0 + side * w, ground, z_far), mat))

    # buildings
    palette = [(0.62, 0.36, 0.28), (0.70, 0.66, 0.58), (0.80, 0.78, 0.72), (0.52, 0.50, 0.50),
               (0.75, 0.62, 0.45), (0.45, 0.38, 0.35), (0.85, 0.85, 0.82)]
    for side in (-1, 1):
        edge = (x_left if side < 0 else x_right) + side * (sidewalk[0] if side < 0 else sidewalk[1])
        if kind == "urban":
            setback, height, gap_p = (0.0, 3.0), (6.0, 25.0), 0.25
        elif kind == "suburban":
            setback, height, gap_p = (3.0, 14.0), (3.5, 9.0), 0.6
        else:
            setback, height, gap_p = (15.0, 45.0), (3.0, 8.0), 0.8
        if rng.random() < (0.1 if kind == "urban" else 0.3):
            continue  # an open side
        z = rng.uniform(-8.0, 2.0)
        while z < z_far:
            length = rng.uniform(7.0, 30.0)
            if rng.random() < gap_p:
                z += rng.uniform(3.0, 25.0)
                continue
            face = edge + side * rng.uniform(*setback)
            depth = rng.uniform(8.0, 20.0)
            h = rng.uniform(*height)
            floor_h = rng.uniform(2.8, 3.6)
            col = rng.uniform(2.2, 4.0)
            mat = _Material(
                _rand_tint(rng, palette[int(rng.integers(len(palette)))], 0.15),
                detail="brick" if rng.random() < 0.5 else "concrete",
                detail_gain=rng.uniform(0.5, 1.2),
                pattern=_PATTERN_WINDOWS,
                params=(floor_h, rng.uniform(0.7, 1.0), rng.uniform(2.0, 2.5), col,
                        col * rng.uniform(0.35, 0.7), rng.uniform(0, col)),
            )
            solids.append(_box((face, ground - h, z), (face + side * depth, ground, z + length), mat))
            if kind == "urban" and rng.random() < 0.25 and length > 8:
                photo = _PHOTO_NAMES[int(rng.integers(len(_PHOTO_NAMES)))]
                bw = rng.uniform(3.0, min(8.0, length - 1.0))
                bh = bw * rng.uniform(0.5, 0.8)
                z0 = z + rng.uniform(0.5, length - bw - 0.5)
                y0 = rng.uniform(3.0, max(3.5, h - bh - 0.5))  # height of the lower edge
                xb = face - side * 0.15
                bmat = _Material((1.0, 1.0, 1.0), pattern=_PATTERN_PHOTO, photo=photo,
                                 photo_rect=(z0, y0, bw, bh))
                solids.append(_box((xb, ground - y0 - bh, z0), (face, ground - y0, z0 + bw), bmat))
            z += length + (rng.uniform(0.0, 1.5) if kind == "urban" else rng.uniform(2.0, 12.0))

    # poles and trees along the road edges
    for side in (-1, 1):
        edge = x_left if side < 0 else x_right
        z = rng.uniform(2.0, 20.0)
        spacing = rng.uniform(15.0, 40.0)
        metal = _rand_tint(rng, (0.45, 0.46, 0.48), 0.2)
        while z < 120.0:
            x = edge + side * rng.uniform(0.4, 1.0)
            solids.append(_Solid("cyl", np.array([x, ground - rng.uniform(4.0, 9.0), z]),
                                 np.array([rng.uniform(0.07, 0.14), ground, 0.0]), _Material(metal, gloss=0.2)))
            z += spacing * rng.uniform(0.8, 1.2)
        n_trees = int(rng.integers(0, {"urban": 4, "suburban": 10, "rural": 14}[kind]))
        bark = _rand_tint(rng, (0.30, 0.24, 0.18), 0.2)
        for _ in range(n_trees):
            z = rng.uniform(3.0, 110.0)
            away = sidewalk[0] if side < 0 else sidewalk[1]
            x = edge + side * (rng.uniform(0.6, max(1.0, away - 0.5)) if away > 0 else rng.uniform(1.5, 12.0))
            trunk_h = rng.uniform(1.8, 3.5)
            r = rng.uniform(1.2, 3.2)
            solids.append(_Solid("cyl", np.array([x, ground - trunk_h - 0.5 * r, z]),
                                 np.array([rng.uniform(0.12, 0.3), ground, 0.0]), _Material(bark, detail="concrete")))
            leaves = _Material(_rand_tint(rng, (0.22, 0.38, 0.14), 0.3), detail="grass", detail_gain=1.5)
            solids.append(_Solid("sphere", np.array([x, ground - trunk_h - r, z]), np.array([r, 0.0, 0.0]), leaves))

    # cars: parked along the kerbs and driving in the lanes
    def add_car(xc, zc):
        w, length = rng.uniform(1.65, 1.95), rng.uniform(3.8, 4.9)
        clear, body_h, cab_h = rng.uniform(0.18, 0.3), rng.uniform(0.55, 0.8), rng.uniform(0.4, 0.6)
        if rng.random() < 0.2:  # van / SUV
            body_h, cab_h = body_h + 0.3, cab_h + 0.2
        paint = _Material(_rand_tint(rng, rng.choice([0.1, 0.5, 0.75, 0.9]) * np.ones(3)
                                     + rng.uniform(-0.1, 0.25, 3), 0.1), gloss=0.35)
        glass = _Material((0.08, 0.09, 0.11), gloss=0.6)
        rubber = _Material((0.05, 0.05, 0.05))
        x0, z0 = xc - w / 2, zc - length / 2
        solids.append(_box((x0, ground - clear - body_h, z0), (x0 + w, ground - clear, z0 + length), paint))
        for zw in (z0 + 0.55, z0 + length - 1.25):
            solids.append(_box((x0 + 0.05, ground - clear, zw), (x0 + w - 0.05, ground, zw + 0.7), rubber))
        inset = rng.uniform(0.05, 0.12)
        zc0 = z0 + length * rng.uniform(0.25, 0.4)
        zc1 = z0 + length * rng.uniform(0.75, 0.9)
        solids.append(_box((x0 + inset, ground - clear - body_h - cab_h, zc0),
                           (x0 + w - inset, ground - clear - body_h, zc1), glass))

    for side in (-1, 1):
        if rng.random() < (0.7 if kind != "rural" else 0.2):
            edge = x_left if side < 0 else x_right
            z = rng.uniform(2.0, 12.0)
            while z < 90.0:
                if rng.random() < 0.7:
                    add_car(edge - side * rng.uniform(1.0, 1.3), z + 2.4)
                z += rng.uniform(5.0, 14.0)
    for lane in range(n_lanes):
        xc = x_left + (lane + 0.5) * lane_w
        for _ in range(int(rng.integers(0, 3))):
            zmin = 7.0 if lane == my_lane else 1.0
            add_car(xc + rng.uniform(-0.3, 0.3), rng.uniform(zmin, 70.0) + 2.5)

    # crates and bins on the sidewalks
    for _ in range(int(rng.integers(0, 6))):
        side = -1 if rng.random() < 0.5 else 1
        w_side = sidewalk[0] if side < 0 else sidewalk[1]
        if w_side <= 0.8:
            continue
        edge = x_left if side < 0 else x_right
        s = rng.uniform(0.4, 1.3)
        x0 = edge + side * rng.uniform(0.3, w_side - 0.3)
        z0 = rng.uniform(2.0, 60.0)
        mat = _Material(_rand_tint(rng, rng.uniform(0.2, 0.8, 3), 0.1),
                        detail="concrete" if rng.random() < 0.5 else None)
        solids.append(_box((x0, ground - kerb_h - s * rng.uniform(0.8, 1.5), z0),
                           (x0 + side * s, ground - kerb_h, z0 + s), mat))

    # illumination
    elev = rng.uniform(0.2, 1.2)
    azim = rng.uniform(-math.pi, math.pi)
    sun_dir = np.array([math.cos(elev) * math.sin(azim), -math.sin(elev), math.cos(elev) * math.cos(azim)])
    overcast = rng.random() < 0.3
    sun = rng.uniform(0.1, 0.35) if overcast else rng.uniform(0.6, 1.1)
    ambient = rng.uniform(0.55, 0.8) if overcast else rng.uniform(0.3, 0.55)
    if overcast:
        zen = np.array([0.70, 0.72, 0.76]) * rng.uniform(0.8, 1.1)
        hor = np.array([0.82, 0.83, 0.85]) * rng.uniform(0.85, 1.1)
    else:
        zen = np.array([0.30, 0.50, 0.85]) * rng.uniform(0.8, 1.15, 3)
        hor = np.array([0.75, 0.82, 0.92]) * rng.uniform(0.9, 1.08, 3)
    return _Layout(
        cam_h=cam_h, yaw=yaw, pitch=pitch, road=(x_left, x_right), lanes=lanes, dash=dash,
        sidewalk=sidewalk, asphalt=asphalt, pavement=pavement, verge=verge, solids=solids,
        sun_dir=sun_dir, sun=sun, ambient=ambient, sky_zenith=np.clip(zen, 0, 1), sky_horizon=np.clip(hor, 0, 1),
        fog_m=rng.uniform(120.0, 600.0), exposure=rng.uniform(0.85, 1.15),
        white=1.0 + rng.uniform(-0.06, 0.06, 3),
    )


# --------------------------------------------------------------------------- ray casting


def render_scene(seed: int, height: int, width: int, max_depth_m: float = 80.0) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic street scene.

    Args:
        seed: any non-negative integer; the scene is a deterministic function of
            ``(seed, height, width)``.
        height, width: image size in pixels (>= 8 each).
        max_depth_m: depth cap in metres; sky and anything farther get exactly
            this value (see the module docstring for why).

    Returns:
        ``rgb``: uint8 array [height, width, 3];
        ``depth_m``: float32 array [height, width], z-depth along the optical
        axis in metres, in ``(0, max_depth_m]``.
    """
    _check_size(height, width)
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"scene seed must be a non-negative integer, got {seed!r}")
    if not max_depth_m > 0:
        raise ValueError(f"max_depth_m must be positive (metres), got {max_depth_m!r}")
    rng = np.random.default_rng(int(seed))
    lay = _layout(rng)
    k = camera_intrinsics(height, width)
    rot = _rotation(lay.yaw, lay.pitch)

    # rays: camera-frame directions with unit z, so the ray parameter t is the z-depth
    u = (np.arange(width) + 0.5 - k[0, 2]) / k[0, 0]
    v = (np.arange(height) + 0.5 - k[1, 2]) / k[1, 1]
    dc = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))))  # [3, H, W]
    d = np.tensordot(rot, dc, axes=(1, 0))  # world directions [3, H, W]
    d = np.where(np.abs(d) < _EPS, _EPS, d)
    ray_len = np.sqrt((dc * dc).sum(axis=0))  # metres of path per metre of z-depth

    # ground plane y = cam_h
    with np.errstate(divide="ignore"):
        t = np.where(d[1] > 1e-6, lay.cam_h / d[1], np.inf)
    obj = np.where(np.isfinite(t), 0, -1).astype(np.int32)  # -1 sky, 0 ground, i+1 solid i
    normal = np.zeros_like(d)
    normal[1] = -1.0

    for i, solid in enumerate(lay.solids):
        rect = _pixel_rect(solid, rot, k, height, width)
        if rect is None:
            continue
        r0, r1, c0, c1 = rect
        ts, ns = _intersect(solid, d[:, r0:r1, c0:c1])
        closer = ts < t[r0:r1, c0:c1]
        if not closer.any():
            continue
        t[r0:r1, c0:c1] = np.where(closer, ts, t[r0:r1, c0:c1])
        obj[r0:r1, c0:c1] = np.where(closer, i + 1, obj[r0:r1, c0:c1])
        normal[:, r0:r1, c0:c1] = np.where(closer[None], ns, normal[:, r0:r1, c0:c1])

    depth = np.minimum(t, max_depth_m).astype(np.float32)
    rgb = _shade(lay, rng, d, t, obj, normal, ray_len, k, height, width)
    return rgb, depth


def _shade(lay, rng, d, t, obj, normal, ray_len, k, height, width) -> np.ndarray:
    """Colour every pixel (uint8 [H, W, 3]) from the hit object, point and normal."""
    details, photos = _textures()
    f_px = math.sqrt(k[0, 0] * k[1, 1])
    dirn = d / np.sqrt((d * d).sum(axis=0))
    elev = -dirn[1]

    # sky: vertical gradient plus soft clouds
    sky_t = np.clip(elev / 0.5, 0.0, 1.0)[..., None] ** 0.7
    sky = lay.sky_horizon * (1 - sky_t) + lay.sky_zenith * sky_t
    clouds = _value_noise(rng, (height, width), (3, 8))
    cloud_amt = rng.uniform(0.0, 0.7)
    sky = sky + cloud_amt * np.clip(clouds - 0.45, 0, 1)[..., None] * (1.0 - sky)
    img = sky.copy()

    hit = obj >= 0
    idx = np.nonzero(hit.ravel())[0]
    if idx.size:
        tt = t.ravel()[idx]
        o = obj.ravel()[idx]
        dd = d.reshape(3, -1)[:, idx]
        n = normal.reshape(3, -1)[:, idx]
        p = dd * tt  # world hit points [3, P]
        dist = tt * ray_len.ravel()[idx]
        cosang = np.abs((n * dirn.reshape(3, -1)[:, idx]).sum(axis=0))
        fp_min = dist / f_px
        fp = fp_min / np.sqrt(np.maximum(cosang, 0.05))  # geometric mean of the footprint axes
        height_above = lay.cam_h - p[1]

        # surface coordinates (metres): along the face, and up/along the ground
        ax = np.argmax(np.abs(n), axis=0)
        s_coord = np.where(ax == 0, p[2], p[0])
        t_coord = np.where(ax == 1, p[2], height_above)
        albedo = np.empty((idx.size, 3), np.float32)
        detail_key = np.full(idx.size, -1, np.int32)
        gain = np.ones(idx.size, np.float32)
        gloss = np.zeros(idx.size, np.float32)

        # ground: asphalt with markings, pavement or verge
        g = o == 0
        if g.any():
            xg, zg, fpg = p[0, g], p[2, g], fp[g]
            x_l, x_r = lay.road
            road = _band(xg, x_l, x_r, fpg)
            walk_l = _band(xg, x_l - lay.sidewalk[0], x_l, fpg) if lay.sidewalk[0] > 0 else 0.0 * xg
            walk_r = _band(xg, x_r, x_r + lay.sidewalk[1], fpg) if lay.sidewalk[1] > 0 else 0.0 * xg
            walk = np.clip(walk_l + walk_r, 0, 1)
            verge = np.clip(1.0 - road - walk, 0, 1)
            paint = _band(xg, x_l + 0.15, x_l + 0.3, fpg) + _band(xg, x_r - 0.3, x_r - 0.15, fpg)
            dash_len, period, phase = lay.dash
            dashes = _pulse(zg + phase, period, 0.0, dash_len, fpg)
            for xs in lay.lanes:
                paint = paint + _band(xg, xs - 0.07, xs + 0.07, fpg) * dashes
            paint = np.clip(paint, 0, 1) * road
            col = (road[:, None] * np.asarray(lay.asphalt) + walk[:, None] * np.asarray(lay.pavement)
                   + verge[:, None] * np.asarray(lay.verge))
            col = col * (1 - paint[:, None]) + 0.85 * paint[:, None]
            albedo[g] = col
            key = np.where(verge > 0.5, _DETAIL_NAMES.index("grass"),
                           np.where(walk > 0.5, _DETAIL_NAMES.index("pavers"), _DETAIL_NAMES.index("gravel")))
            detail_key[g] = key
            gain[g] = np.where(paint > 0.5, 0.3, 1.0)

        # solids: gather per-object material properties
        mats = [s.material for s in lay.solids]
        if mats:
            tints = np.array([[0.0, 0.0, 0.0]] + [m.tint for m in mats], np.float32)
            dkeys = np.array([-1] + [(_DETAIL_NAMES.index(m.detail) if m.detail else -1) for m in mats], np.int32)
            gains = np.array([1.0] + [m.detail_gain for m in mats], np.float32)
            glosses = np.array([0.0] + [m.gloss for m in mats], np.float32)
            s_ = ~g
            albedo[s_] = tints[o[s_]]
            detail_key[s_] = dkeys[o[s_]]
            gain[s_] = gains[o[s_]]
            gloss[s_] = glosses[o[s_]]

            # windows on building fronts and sides (not roofs)
            pat = np.array([_PATTERN_NONE] + [m.pattern for m in mats], np.int32)[o]
            w = (pat == _PATTERN_WINDOWS) & (ax != 1)
            if w.any():
                prm = np.array([(0.0,) * 6] + [m.params for m in mats], np.float32)[o[w]]
                floor_h, sill, top, colp, colw, off = prm.T
                rows = _pulse(t_coord[w], floor_h, sill, top, fp[w]) * (t_coord[w] > 1.0)
                cols = _pulse(s_coord[w] + off, colp, 0.0, colw, fp[w])
                cov = (rows * cols)[:, None]
                glass = np.array([0.10, 0.12, 0.16], np.float32)
                albedo[w] = albedo[w] * (1 - cov) + glass * cov
                gloss[w] = 0.55 * cov[:, 0]
                gain[w] = gain[w] * (1 - cov[:, 0])

            ph = pat == _PATTERN_PHOTO
            for oi in np.unique(o[ph]):
                m = mats[oi - 1]
                sel = ph & (o == oi)
                pyr = photos[m.photo]
                s0, t0, bw, bh = m.photo_rect
                texel = bw / pyr.widths[0]
                face = ax[sel] == 0
                su = np.where(face, p[2, sel] - s0, 0.0)
                tv = np.where(face, (t0 + bh) - height_above[sel], 0.0)
                # rescale rows so that one texel is ``texel`` metres along both axes
                tv = tv * (pyr.heights[0] / bh) * texel
                albedo[sel] = _sample(pyr, su, tv, texel, fp[sel], wrap=False)
                gloss[sel] = 0.05

        # grey detail textures, mip-mapped by footprint
        for key_i, name in enumerate(_DETAIL_NAMES):
            sel = detail_key == key_i
            if not sel.any():
                continue
            pyr, texel = details[name]
            val = _sample(pyr, s_coord[sel], t_coord[sel], texel, fp[sel])[:, 0]
            albedo[sel] *= (1.0 + gain[sel] * (val - 1.0))[:, None]

        # lighting: Lambert sun + hemispherical sky ambient + sky reflection on glossy surfaces
        lam = np.maximum(0.0, (n * lay.sun_dir[:, None]).sum(axis=0))
        hemi = 0.75 - 0.25 * n[1]  # facing up (n_y = -1) gets the full sky
        sun_col = np.array([1.0, 0.97, 0.9])
        light = lay.ambient * hemi[:, None] + lay.sun * lam[:, None] * sun_col
        col = albedo * light
        refl = lay.sky_horizon * 0.6 + lay.sky_zenith * 0.4
        col = col * (1 - gloss[:, None]) + refl * gloss[:, None] * (0.6 + 0.4 * light)
        fog = (1.0 - np.exp(-dist / lay.fog_m))[:, None]
        col = col * (1 - fog) + lay.sky_horizon * fog
        img.reshape(-1, 3)[idx] = col

    img = img * lay.exposure * lay.white
    img = img + rng.normal(0.0, 0.008, img.shape)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
