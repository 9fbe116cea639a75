"""DKO: kernels -> metasurfaces (stage 2), the optical first layer, training loops, evaluation."""

from .conv import OpticalConv2d, layer_defaults, replace_conv
from .evaluation import evaluate_design, front_end_mode, hybrid_from_dko, ideal_optics_model, load_design
from .fidelity import fidelity_table, fit_element_gains, fit_gain, summarize_fidelity
from .frontend import OpticalFrontEnd, find_frontend, make_hybrid
from .kernels import merge_signed, split_kernel
from .losses import leakage_loss, paper_loss
from .sensor_eval import SENSOR_MODES, SensorFrontEnd, sensor_front_end_mode, sensor_model
from .synthesis import load_array, save_array, synthesize
from .train import run_e2e, run_finetune, run_stage1
