"""The synthetic street-scene renderer: camera, exact z-depth, determinism, culling."""

import math

import numpy as np
import pytest

from dkolib.depth import scenes
from dkolib.depth.scenes import camera_intrinsics, render_scene, valid_depth_mask

# KITTI 2011_09_26 P_rect_02: fx = fy = 721.5377 px on a 1242 x 375 frame (KITTI raw calibration)
KITTI_F_PX, KITTI_W, KITTI_H = 721.5377, 1242, 375


@pytest.mark.parametrize("height,width", [(192, 640), (96, 320), (375, 1242)])
def test_field_of_view_is_kittis(height, width):
    k = camera_intrinsics(height, width)
    hfov = 2 * math.degrees(math.atan(width / 2 / k[0, 0]))
    vfov = 2 * math.degrees(math.atan(height / 2 / k[1, 1]))
    assert hfov == pytest.approx(2 * math.degrees(math.atan(KITTI_W / 2 / KITTI_F_PX)), abs=0.5)
    assert vfov == pytest.approx(2 * math.degrees(math.atan(KITTI_H / 2 / KITTI_F_PX)), abs=0.5)
    assert k[0, 2] == width / 2 and k[1, 2] == height / 2


def test_shapes_types_and_range():
    rgb, depth = render_scene(3, 40, 120)
    assert rgb.shape == (40, 120, 3) and rgb.dtype == np.uint8
    assert depth.shape == (40, 120) and depth.dtype == np.float32
    assert depth.min() > 0 and depth.max() <= 80.0
    # the top row looks above the horizon: sky or far, both capped at exactly max_depth
    assert np.any(depth[0] == 80.0)
    # the bottom rows see the road a few metres ahead, as a KITTI frame does
    assert np.median(depth[-1]) < 10.0
    assert rgb.std() > 10  # not a flat image


def test_deterministic_and_seed_dependent():
    a = render_scene(11, 32, 96)
    b = render_scene(11, 32, 96)
    c = render_scene(12, 32, 96)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_max_depth_cap():
    _, depth = render_scene(5, 32, 96, max_depth_m=20.0)
    assert depth.max() == 20.0
    assert not valid_depth_mask(depth, 1e-3, 20.0)[depth == 20.0].any()


def _empty_layout(**kw):
    """A flat road, no solids, level camera 1.65 m above the ground, no yaw or pitch."""
    base = dict(
        cam_h=1.65, yaw=0.0, pitch=0.0, road=(-5.0, 5.0), lanes=np.array([]), dash=(3.0, 10.0, 0.0),
        sidewalk=(0.0, 0.0), asphalt=(0.3, 0.3, 0.3), pavement=(0.5, 0.5, 0.5), verge=(0.2, 0.4, 0.1),
        solids=[], sun_dir=np.array([0.0, -1.0, 0.0]), sun=1.0, ambient=0.4,
        sky_zenith=np.array([0.3, 0.5, 0.9]), sky_horizon=np.array([0.8, 0.8, 0.9]), fog_m=300.0,
        exposure=1.0, white=np.ones(3),
    )
    base.update(kw)
    return scenes._Layout(**base)


def test_ground_plane_depth_is_exact(monkeypatch):
    h, w = 48, 160
    monkeypatch.setattr(scenes, "_layout", lambda rng: _empty_layout())
    _, depth = render_scene(0, h, w)
    k = camera_intrinsics(h, w)
    for v in range(h):
        dy = (v + 0.5 - k[1, 2]) / k[1, 1]  # ray slope below the optical axis
        expected = min(1.65 / dy, 80.0) if dy > 0 else 80.0
        # z-depth of a level ground plane depends on the row only
        np.testing.assert_allclose(depth[v], expected, rtol=1e-5)


def test_box_face_gives_z_depth_not_range(monkeypatch):
    h, w = 48, 160
    wall = scenes._box((-2.0, 0.0, 10.0), (2.0, 1.65, 12.0), scenes._Material((0.5, 0.5, 0.5)))
    monkeypatch.setattr(scenes, "_layout", lambda rng: _empty_layout(solids=[wall]))
    _, depth = render_scene(0, h, w)
    k = camera_intrinsics(h, w)
    u = (np.arange(w) + 0.5 - k[0, 2]) / k[0, 0]  # x / z of each column's ray
    cols = np.abs(u * 10.0) < 2.0  # columns whose rays hit the front face at z = 10 m
    rows = (np.arange(h) + 0.5 - k[1, 2]) / k[1, 1] * 10.0  # y at z = 10 m
    rows = (rows > 0.0) & (rows < 1.65)
    face = depth[np.ix_(rows, cols)]
    # fronto-parallel face: the same z-depth at every pixel, although the ray lengths differ
    np.testing.assert_allclose(face, 10.0, rtol=1e-6)
    assert np.all(depth[np.ix_(rows, ~cols)] != 10.0)


def test_culling_is_conservative(monkeypatch):
    """The per-solid pixel rectangle must never drop a pixel that the solid covers."""
    h, w = 32, 96
    culled = [render_scene(s, h, w)[1] for s in (1, 2)]
    monkeypatch.setattr(scenes, "_pixel_rect", lambda solid, rot, k, hh, ww: (0, hh, 0, ww))
    full = [render_scene(s, h, w)[1] for s in (1, 2)]
    for a, b in zip(culled, full):
        np.testing.assert_array_equal(a, b)


def test_mipmap_averages_far_texture():
    details, _ = scenes._textures()
    pyr, texel = details["gravel"]
    s = np.linspace(0.0, 3.0, 500)
    near = scenes._sample(pyr, s, s * 0.7, texel, np.full(500, texel))[:, 0]
    far = scenes._sample(pyr, s, s * 0.7, texel, np.full(500, 1e3))[:, 0]
    assert near.std() > 0.1  # fine detail close up
    assert far.std() < 1e-3 and far.mean() == pytest.approx(1.0, abs=0.05)  # the mean far away


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="height"):
        render_scene(0, 4, 64)
    with pytest.raises(ValueError, match="seed"):
        render_scene(-1, 32, 64)
