"""The study machinery: pipeline steps, the equal-budget experiment, reports and reproduction.

It runs and reports experiments built from :mod:`dkolib.optics`, :mod:`dkolib.depth`
and :mod:`dkolib.dko`; those science packages never import it.
"""

from .equal_budget_text import claim_sentence, stability_sentence, tta_sentence, tta_table
from .figures import c_ref_of, plot_accuracy_vs_budget, plot_crop_vs_physical, plot_time_to_accuracy
from .paths import ProfilePaths
from .pipeline import (design_paths, ensure_costs, ensure_dko, ensure_e2e, ensure_equal_budget, ensure_physical_eval,
                       ensure_tolerances)
from .protocol import resolve_reference_run, settings_from_config
from .reports import (depth_histogram, dko_kernels, ensure_stage1, gain_restoration, motorcycle_dataset,
                      stage1_metrics)
from .stats import catch_up, error_ratios, time_to_accuracy
