"""MetasurfaceArray: element layout, initialisations, library atoms, gradients."""

import math

import pytest
import torch

from dkolib.config import load_config
from dkolib.optics.metasurface import MetasurfaceArray, lens_phase_rad

torch.set_num_threads(1)


class IdealAtom:
    """Stand-in with IdealPhaseAtom's API (exp(i phase))."""

    def transmission_at(self, phase_rad, wavelength_m=None):
        phase = torch.as_tensor(phase_rad, dtype=torch.float32)
        return torch.polar(torch.ones_like(phase), phase)


class FakeLibrary:
    """Tiny library with MetaAtomLibrary's API: phase linear in radius (2 pi over the range at 550 nm),
    scaled by 550 nm / wavelength; amplitude 0.9."""

    r_min_m, r_max_m = 50e-9, 150e-9

    def _phase(self, radius_m, wavelength_m):
        return 2 * math.pi * (radius_m - self.r_min_m) / (self.r_max_m - self.r_min_m) * (550e-9 / wavelength_m)

    def transmission_at(self, radius_m, wavelength_m):
        wl = torch.as_tensor(wavelength_m, dtype=torch.float64)
        if wl.ndim == 1:
            wl = wl.reshape(-1, *([1] * (radius_m.ndim - 1)))
        ph = self._phase(radius_m.to(torch.float64), wl)
        return torch.polar(0.9 * torch.ones_like(ph), ph).to(torch.complex64)

    def radius_for_phase(self, phase_rad, wavelength_m):
        frac = torch.remainder(torch.as_tensor(phase_rad, dtype=torch.float64), 2 * math.pi) / (2 * math.pi)
        frac = frac * (wavelength_m / 550e-9)  # within one 2 pi cycle for wavelengths <= 550 nm
        return self.r_min_m + (self.r_max_m - self.r_min_m) * frac.clamp(0, 1)


def _cfg(n=33):
    return load_config("default", {"optics.n_cells": n}).optics


def _wrapped_diff(a, b):
    return torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi


def _atoms():
    atoms = [IdealAtom()]
    try:
        from dkolib.optics.metaatoms import IdealPhaseAtom
        atoms.append(IdealPhaseAtom())
    except ImportError:
        pass
    return atoms


def test_element_layout_and_wavelengths():
    cfg = _cfg()
    arr = MetasurfaceArray(2, 3, cfg, IdealAtom(), init="random", generator=torch.Generator().manual_seed(0))
    assert arr.latent.shape == (12, 33, 33)
    assert arr.transmission().shape == (12, 33, 33) and arr.transmission().is_complex()
    for o in range(2):
        for i in range(3):
            for s in range(2):
                e = MetasurfaceArray.element_index(o, i, s, 3)
                assert e == (o * 3 + i) * 2 + s
                assert arr.wavelengths_m[e].item() == cfg.wavelengths_m[i]


@pytest.mark.parametrize("atom", _atoms())
def test_lens_init_ideal_atom_gives_lens_phase_and_focus(atom):
    cfg = _cfg(65)
    arr = MetasurfaceArray(1, 3, cfg, atom, init="lens")
    for i, lam in enumerate(cfg.wavelengths_m):
        want = torch.from_numpy(lens_phase_rad(65, cfg.cell_pitch_m, lam, cfg.sensor_distance_m,
                                               cfg.source_distance_m))
        got = torch.angle(arr.transmission()[2 * i]).double()
        assert _wrapped_diff(got, want).abs().max() < 1e-5
    psf_lens = arr.psf(7, engine="fast")
    rnd = MetasurfaceArray(1, 3, cfg, atom, init="random", generator=torch.Generator().manual_seed(1))
    psf_rnd = rnd.psf(7, engine="fast")
    assert torch.all(psf_lens[:, 3, 3] > 20 * psf_rnd[:, 3, 3])  # the lens focuses on axis
    assert torch.all(psf_lens.flatten(1).argmax(1) == 3 * 7 + 3)


def test_random_init_is_seeded():
    cfg = _cfg()
    a = MetasurfaceArray(1, 1, cfg, IdealAtom(), init="random", generator=torch.Generator().manual_seed(7))
    b = MetasurfaceArray(1, 1, cfg, IdealAtom(), init="random", generator=torch.Generator().manual_seed(7))
    c = MetasurfaceArray(1, 1, cfg, IdealAtom(), init="random", generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a.latent, b.latent)
    assert not torch.equal(a.latent, c.latent)
    assert 0 <= a.latent.min() and a.latent.max() < 2 * math.pi


def test_random_init_in_blocks_draws_what_one_draw_does(monkeypatch):
    """The random start is drawn a few elements at a time (memory); the values must be those of one
    ``torch.rand`` of the whole ``[E, N, N]`` array (an independent draw here), so results and
    the sharded stage 2's digests do not depend on the block size."""
    import dkolib.optics.metasurface as ms

    cfg = _cfg()
    monkeypatch.setattr(ms, "_INIT_BLOCK_CELLS", 2 * cfg.n_cells ** 2 + 1)  # blocks of 2 elements, 6 in all
    a = MetasurfaceArray(1, 3, cfg, IdealAtom(), init="random", generator=torch.Generator().manual_seed(7))
    whole = torch.rand((6, cfg.n_cells, cfg.n_cells), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(a.latent.detach(), (2 * math.pi * whole).to(torch.float32))
    lib = FakeLibrary()
    b = MetasurfaceArray(1, 3, cfg, lib, init="random", generator=torch.Generator().manual_seed(7))
    radius = lib.r_min_m + (lib.r_max_m - lib.r_min_m) * whole
    assert torch.equal(b.radii_m().detach(), ms._radius_from_latent(ms._latent_from_radius(radius, lib).to(torch.float32), lib))


def test_library_lens_and_phase_init_use_reverse_lookup():
    cfg = load_config("default", {"optics.n_cells": 33, "optics.wavelengths_m": [550e-9, 500e-9, 450e-9]}).optics
    lib = FakeLibrary()
    arr = MetasurfaceArray(1, 3, cfg, lib, init="lens")
    r = arr.radii_m()
    assert r.min() >= lib.r_min_m and r.max() <= lib.r_max_m
    for i, lam in enumerate(cfg.wavelengths_m):
        want = torch.from_numpy(lens_phase_rad(33, cfg.cell_pitch_m, lam, cfg.sensor_distance_m,
                                               cfg.source_distance_m))
        got = torch.angle(arr.transmission()[2 * i + 1]).double()
        assert _wrapped_diff(got, want).abs().max() < 2e-3  # sigmoid/logit round trip in float32
    target = torch.full((33, 33), 1.0, dtype=torch.float64)
    arr2 = MetasurfaceArray(1, 3, cfg, lib, init="phase", target_phase_rad=target)
    assert _wrapped_diff(torch.angle(arr2.transmission()).double(), target).abs().max() < 2e-3
    rnd = MetasurfaceArray(1, 3, cfg, lib, init="random", generator=torch.Generator().manual_seed(0))
    rr = rnd.radii_m()
    assert rr.min() >= lib.r_min_m and rr.max() <= lib.r_max_m and rr.std() > 0.2 * (lib.r_max_m - lib.r_min_m)


def test_real_library_if_available():
    try:
        from dkolib.optics.metaatoms import MetaAtomLibrary
        lib = MetaAtomLibrary.load()
    except Exception as err:  # library data not built in this checkout
        pytest.skip(f"meta-atom library unavailable: {err}")
    arr = MetasurfaceArray(1, 3, _cfg(17), lib, init="lens")
    t = arr.transmission()
    assert t.shape == (6, 17, 17) and torch.isfinite(t.real).all()
    assert (arr.radii_m() >= lib.r_min_m - 1e-12).all()


def test_gradients_reach_latent():
    cfg = _cfg(17)
    for atom in (IdealAtom(), FakeLibrary()):
        arr = MetasurfaceArray(1, 3, cfg, atom, init="random", generator=torch.Generator().manual_seed(0)) \
            if isinstance(atom, IdealAtom) else MetasurfaceArray(
                1, 3, load_config("default", {"optics.n_cells": 17,
                                              "optics.wavelengths_m": [550e-9, 500e-9, 450e-9]}).optics,
                atom, init="lens")
        arr.psf(7, engine="fast")[:, 3, 3].sum().backward()
        assert arr.latent.grad is not None and arr.latent.grad.abs().sum() > 0


def test_from_conv_weight_and_errors():
    cfg = _cfg()
    arr = MetasurfaceArray.from_conv_weight(torch.zeros(4, 3, 7, 7), cfg, IdealAtom(), init="lens")
    assert (arr.n_out, arr.n_in, arr.n_elements) == (4, 3, 24)
    with pytest.raises(ValueError, match="C_out, C_in"):
        MetasurfaceArray.from_conv_weight(torch.zeros(4, 3, 7), cfg, IdealAtom())
    with pytest.raises(ValueError, match="wavelengths"):
        MetasurfaceArray(1, 4, cfg, IdealAtom())
    with pytest.raises(ValueError, match="init"):
        MetasurfaceArray(1, 3, cfg, IdealAtom(), init="bogus")
    with pytest.raises(ValueError, match="target_phase_rad"):
        MetasurfaceArray(1, 3, cfg, IdealAtom(), init="phase")
    with pytest.raises(TypeError, match="radii_m"):
        MetasurfaceArray(1, 3, cfg, IdealAtom()).radii_m()
