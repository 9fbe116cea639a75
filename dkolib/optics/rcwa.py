"""RCWA of one meta-atom: a TiO2 nanocylinder on glass, computed with meent.

Geometry and conventions (used by :mod:`dkolib.optics.metaatoms` and
``scripts/build_metaatom_library.py``):

- Square lattice of period ``period_m`` (300 nm), one cylinder of radius
  ``radius_m`` and height ``height_m`` (600 nm) per cell, surrounded by air.
- Illumination: a normally incident plane wave **from the glass substrate
  side** (semi-infinite SiO2); the zeroth transmitted order leaves into air.
  With a 300 nm lattice and wavelengths >= 400 nm the zeroth order is the only
  propagating transmitted order, so nothing is lost to diffraction on the
  output side. The back face of the substrate is not modelled (semi-infinite).
- Time convention ``exp(-i omega t)``; fields ``exp(+i k z)``. Phase therefore
  *grows* with optical path: a thicker/denser pillar delays more and has a
  larger phase. meent itself works in the opposite (``exp(+j omega t)``)
  convention; its complex amplitudes are conjugated here (checked against the
  closed-form Airy formula in the tests).
- Reference planes: incident field at the substrate/pillar interface,
  transmitted field at the pillar top (z = height).
- Normalisation: the returned ``t`` is the *power-normalised* zeroth-order
  amplitude ``t = sqrt(n_out / n_in) * E_t / E_i`` (normal incidence), so
  ``|t|^2`` is the fraction of the incident power carried by the zeroth
  transmitted order and ``|t| <= 1`` for a passive structure.
- Polarisation: the cylinder lattice has C4v symmetry, so at normal incidence
  the zeroth order is polarisation independent; TE (E along y) is computed.
- Fourier orders: ``n_orders = N`` keeps harmonics ``-N..N`` along each axis,
  i.e. ``(2N + 1)^2`` plane waves per polarisation.

Circle model: the cylinder cross-section is an area-preserving staircase of
``n_steps`` horizontal strips (strip edges at ``r sin(phi_j)``, phi uniform),
whose permittivity Fourier coefficients are computed exactly by meent's
continuous Fourier series (``cfs2d``) with Li's factorisation rules. Every
edge moves continuously with the radius, so ``t(radius)`` is smooth except
at physical (lattice) resonances.

Materials (meent's bundled refractive-index tables, from
refractiveindex.info):

- TiO2: T. Siefke et al., "Materials pushing the application limits of wire
  grid polarizers further into the deep ultraviolet spectral range",
  Adv. Opt. Mater. 4, 1780-1786 (2016): ALD TiO2 film (meent name
  ``TiO2_siefke``).
- SiO2: I. H. Malitson, "Interspecimen comparison of the refractive index of
  fused silica", J. Opt. Soc. Am. 55, 1205-1208 (1965), Sellmeier formula
  (meent name ``SiO2_malitson``).

Any other material of meent's table can be used for the pillar or the substrate
(:func:`available_materials` lists them, :func:`check_material` checks that a
table covers the wavelengths and, for a substrate, that it does not absorb).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import InputError

TIO2_TABLE = "TiO2_siefke"
SIO2_TABLE = "SiO2_malitson"
DEFAULT_HEIGHT_M = 600e-9
DEFAULT_PERIOD_M = 300e-9
DEFAULT_STAIRCASE_STEPS = 32
LIBRARY_ORDERS = 6
"""Fourier harmonics per axis used for the packaged library (chosen from the convergence study)."""


@lru_cache(maxsize=1)
def _material_table() -> dict:
    import meent

    return meent.read_material_table()


def refractive_index(material: str, wavelength_m: float) -> complex:
    """Complex refractive index ``n + i k`` (k >= 0: absorbing, exp(-i omega t)).

    ``material`` is a meent table name (e.g. ``"TiO2_siefke"``); ``wavelength_m``
    in metres (a scalar). meent returns ``n - i k``; it is conjugated here.
    """
    import meent

    wavelength_m = float(wavelength_m)
    if not 100e-9 <= wavelength_m <= 20e-6:
        raise ValueError(
            f"wavelength_m={wavelength_m!r} does not look like metres; pass e.g. 550e-9 for 550 nm"
        )
    table = _material_table()
    if material.upper() not in table:
        raise ValueError(f"material '{material}' is not in meent's nk tables; see meent.print_materials()")
    return complex(np.conj(meent.find_nk_index(material, table, wavelength_m)))


def available_materials() -> list[str]:
    """Names of the materials in meent's nk table (case-insensitive; e.g. ``TIO2_SIEFKE``, ``SI3N4_LUKE``)."""
    return sorted(_material_table())


def material_range_m(material: str) -> tuple[float, float]:
    """Wavelength range ``(lo, hi)`` in metres that meent's table covers for ``material``."""
    data = _material_table().get(material.upper())
    if data is None:
        raise InputError(f"material {material!r} is not in meent's nk table; choose one of "
                         f"{', '.join(available_materials())}")
    if isinstance(data, dict):  # a fitted dispersion formula
        lo, hi = data["wavelength_range"]
        return float(lo), float(hi)
    return float(np.min(data[:, 0])), float(np.max(data[:, 0]))


def check_material(material: str, wavelengths_m, lossless: bool = False) -> None:
    """Raise :class:`~dkolib.errors.InputError` unless ``material`` is tabulated at every wavelength.

    meent itself only warns and clamps outside its table. With ``lossless`` (a
    substrate: the RCWA half-spaces must be real) the extinction coefficient must
    also be 0 at every wavelength (metres).
    """
    lo, hi = material_range_m(material)
    wls = np.atleast_1d(np.asarray(wavelengths_m, dtype=np.float64))
    outside = wls[(wls < lo) | (wls > hi)]
    if outside.size:
        raise InputError(f"material {material!r} is tabulated for {lo * 1e9:.0f}-{hi * 1e9:.0f} nm only, not at "
                         f"{', '.join(f'{w * 1e9:.0f}' for w in outside)} nm; pick another material or narrow "
                         "the wavelength grid")
    if lossless:
        k_ext = [refractive_index(material, w).imag for w in wls]
        lossy = [(w, k) for w, k in zip(wls, k_ext) if k != 0]
        if lossy:
            w, k = lossy[0]
            raise InputError(f"material {material!r} absorbs (k = {k:.3g} at {w * 1e9:.0f} nm) but the substrate "
                             "half-space must be lossless; pick a transparent substrate (e.g. SiO2_malitson)")


def n_tio2(wavelength_m: float) -> complex:
    """ALD TiO2 (Siefke et al. 2016), ``n + i k`` at ``wavelength_m`` (metres)."""
    return refractive_index(TIO2_TABLE, wavelength_m)


def n_sio2(wavelength_m: float) -> complex:
    """Fused silica (Malitson 1965 Sellmeier), ``n`` at ``wavelength_m`` (metres)."""
    return refractive_index(SIO2_TABLE, wavelength_m)


def staircase_circle(
    radius_m: float, period_m: float, n_steps: int, n_pillar: complex, n_background: complex
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compressed unit cell of an area-preserving staircase circle, centred in the cell.

    Returns ``(index, x_edges_m, y_edges_m)``: ``index`` [rows, cols] complex
    refractive index of each rectangle; ``x_edges_m`` [cols, 1] and
    ``y_edges_m`` [rows, 1] the right/upper edge of each column/row (metres,
    the last one equal to ``period_m``), the format of meent's ``cfs2d``.
    A radius of 0 gives a homogeneous background layer.
    """
    if not 0.0 <= radius_m < period_m / 2:
        raise ValueError(
            f"radius_m={radius_m!r} must lie in [0, period_m/2) = [0, {period_m / 2!r}) "
            "(metres) so that neighbouring cylinders do not touch"
        )
    if n_steps < 2:
        raise ValueError(f"n_steps={n_steps} must be >= 2")
    if radius_m == 0.0:
        return (
            np.full((1, 1), n_background, dtype=np.complex128),
            np.array([[period_m]]),
            np.array([[period_m]]),
        )
    r = float(radius_m)
    phi = np.linspace(-np.pi / 2, np.pi / 2, n_steps + 1)
    y_b = r * np.sin(phi)

    def chord_area(y):  # integral of the chord length 2 sqrt(r^2 - y^2) from 0 to y
        return y * np.sqrt(np.maximum(r * r - y * y, 0.0)) + r * r * np.arcsin(np.clip(y / r, -1.0, 1.0))

    half_width = (chord_area(y_b[1:]) - chord_area(y_b[:-1])) / (2.0 * np.diff(y_b))
    xs = np.unique(np.concatenate([-half_width, half_width]))
    x_edges = np.concatenate([xs + period_m / 2, [period_m]])
    y_edges = np.concatenate([y_b + period_m / 2, [period_m]])
    x_left = np.concatenate([[0.0], x_edges[:-1]])
    x_mid = 0.5 * (x_left + x_edges) - period_m / 2
    index = np.full((len(y_edges), len(x_edges)), n_background, dtype=np.complex128)
    for j in range(n_steps):  # row 0 is the background below the circle
        index[j + 1, np.abs(x_mid) < half_width[j]] = n_pillar
    return index, x_edges.reshape(-1, 1), y_edges.reshape(-1, 1)


def pillar_transmission(
    radius_m: float,
    wavelength_m: float,
    n_orders: int,
    height_m: float = DEFAULT_HEIGHT_M,
    period_m: float = DEFAULT_PERIOD_M,
    n_steps: int = DEFAULT_STAIRCASE_STEPS,
    n_pillar: complex | None = None,
    n_background: complex = 1.0,
    n_in: complex | None = None,
    n_out: complex = 1.0,
    return_energy: bool = False,
):
    """Zeroth-order transmission of a periodic cylinder layer (one meent RCWA solve).

    Parameters (SI units): ``radius_m`` cylinder radius; ``wavelength_m``
    vacuum wavelength; ``n_orders`` Fourier harmonics kept per axis (-N..N);
    ``n_pillar`` / ``n_in`` default to TiO2 / SiO2 at ``wavelength_m``;
    ``n_background`` fills the cell around the pillar (air), ``n_out`` the
    output half-space (air). Indices use ``n + i k`` (k >= 0 absorbing).

    Returns the power-normalised complex amplitude ``t`` (``|t|^2`` =
    transmitted zeroth-order power fraction, exp(-i omega t) phase
    convention, see module docstring); with ``return_energy`` also
    ``R + T`` summed over all orders (1 for a lossless structure).
    """
    import meent
    from meent.on_numpy.emsolver.fourier_analysis import cfs2d

    if int(n_orders) != n_orders or n_orders < 0:
        raise ValueError(f"n_orders={n_orders!r} must be a non-negative integer")
    n_orders = int(n_orders)
    wavelength_m = float(wavelength_m)
    n_pillar = n_tio2(wavelength_m) if n_pillar is None else complex(n_pillar)
    n_in = n_sio2(wavelength_m) if n_in is None else complex(n_in)
    n_out = complex(n_out)
    if abs(n_in.imag) > 0 or abs(n_out.imag) > 0:
        raise ValueError("n_in and n_out must be lossless (real) half-spaces")
    # meent works in the exp(+j omega t) convention: absorbing index is n - jk.
    index, x_e, y_e = staircase_circle(
        radius_m, period_m, n_steps, np.conj(n_pillar), np.conj(complex(n_background))
    )
    eps = index**2
    # Li's rules: inverse rule across the discontinuities each field component meets.
    epz = cfs2d(eps, x_e, y_e, 1, 1, n_orders, n_orders)
    epy = cfs2d(eps, x_e, y_e, 1, 0, n_orders, n_orders)
    epx = cfs2d(eps, x_e, y_e, 0, 1, n_orders, n_orders)
    mee = meent.call_mee(
        backend=0,
        n_top=n_in.real,
        n_bot=n_out.real,
        theta=0.0,
        phi=0.0,
        pol=0,
        fto=[n_orders, n_orders],
        period=[period_m, period_m],
        wavelength=wavelength_m,
        thickness=[float(height_m)],
        type_complex=np.complex128,
    )
    result = mee.solve_2d(wavelength_m, epx[None], epy[None], np.linalg.inv(epz)[None])["res"]
    t_meent = result["T_s"][n_orders, n_orders]
    t = complex(np.sqrt(n_out.real / n_in.real) * np.conj(t_meent))
    if return_energy:
        energy = float(np.sum(result["de_ti"]) + np.sum(result["de_ri"]))
        return t, energy
    return t


def slab_transmission(
    n_in: complex, n_layer: complex, n_out: complex, thickness_m: float, wavelength_m: float
) -> complex:
    """Closed-form (Airy / one-layer transfer matrix) transmission of a slab, normal incidence.

    Media ``n_in | n_layer (thickness_m) | n_out`` with ``n + i k`` indices
    (exp(-i omega t)); returns the power-normalised amplitude
    ``sqrt(n_out/n_in) * E_t / E_i``, incident field referenced at the first
    interface, transmitted field at the second.
    """
    k0 = 2.0 * np.pi / wavelength_m
    n1, n2, n3 = complex(n_in), complex(n_layer), complex(n_out)
    delta = k0 * n2 * thickness_m
    # Characteristic matrix of the layer, M = [[cos d, -i sin d / n2], [-i n2 sin d, cos d]]
    # (Born & Wolf convention, exp(-i omega t)); t = 2 n1 / (n1 m11 + n1 n3 m12 + m21 + n3 m22).
    m11 = np.cos(delta)
    m12 = -1j * np.sin(delta) / n2
    m21 = -1j * n2 * np.sin(delta)
    m22 = np.cos(delta)
    t_field = 2.0 * n1 / (n1 * m11 + n1 * n3 * m12 + m21 + n3 * m22)
    return complex(np.sqrt((n3 / n1).real) * t_field)
