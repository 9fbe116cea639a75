"""dkolib: Direct Kernel Optimization of metasurface front ends for hybrid
opto-electronic CNNs (simulation, synthesis, end-to-end baseline, evaluation)."""

__version__ = "0.1.0"
