"""Optics: meta-atoms -> metasurface arrays -> PSFs on the sensor -> rendered sensor images."""

from .metaatoms import IdealPhaseAtom, MetaAtomLibrary, load_atom
from .metasurface import MetasurfaceArray, lens_phase_rad
from .propagation import count_psf_flops, psf, psf_fast, psf_reference
from .render import SensorNoise, crop_center, optical_conv, signed_kernels, split_psf
from .sampling import SamplingWarning, check_sampling
from .sensor import ArrayGeometry, array_geometry, array_sensor_psfs, light_budget, render_sensor, sensor_image
from .sensor_psf import baffle_sin_for_wall, sensor_psf
from .realisability import Realisability, RealisabilityWarning, realisability
