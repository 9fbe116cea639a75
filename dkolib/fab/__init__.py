"""Fabrication: a designed metasurface array as a mask layout, and its tolerance to real-world errors."""

from .as_fabricated import (array_radii_m, designed_kernels, lattice_transmission, read_design, read_designs,
                            rebuild_array, subdivided)
from .layout import count_references, estimate_layout_cost, export_array_layout, pillar_lattice, radii_table, write_layout
from .plots import plot_tolerances
from .tolerances import (BuiltArray, as_built, degradation, photon_level, radius_error, read_noise,
                         run_tolerance_study, sensor_distance_error, study_from_files, tolerance_cases,
                         wavelength_band)
