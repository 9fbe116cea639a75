"""Device placement: the configured device is honoured, and a missing GPU is a clear error."""

import pytest
import torch

from dkolib.config import load_config
from dkolib.depth.network import DepthNet
from dkolib.dko.train import collate, model_device, resolve_device


def test_cpu_device_resolves():
    assert resolve_device(load_config("smoke")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    # an input error (one line and exit 2 from the scripts, via run_cli), not a traceback
    from dkolib.errors import InputError

    with pytest.raises(InputError, match="device=cpu"):
        resolve_device(load_config("smoke", {"device": "cuda"}))


def test_batches_follow_the_model():
    cfg = load_config("smoke")
    net = DepthNet(cfg.model)
    batch = collate([{"rgb": torch.zeros(3, 4, 4), "depth_m": torch.ones(1, 4, 4)}] * 2, model_device(net))
    assert batch["rgb"].device == model_device(net) and batch["rgb"].shape == (2, 3, 4, 4)
