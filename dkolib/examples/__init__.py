"""Worked examples of reusing the optics in other networks (``notebooks/09_resnet18_example.ipynb``).

* :mod:`~dkolib.examples.shapes`: a synthetic image-classification set made on the fly (coloured
  shapes on textured backgrounds), so that the example needs no download;
* :mod:`~dkolib.examples.resnet`: a standard ResNet-18 classifier in plain PyTorch (torchvision's
  layout and parameter names), its training / evaluation loops, BatchNorm re-estimation after an
  optical first layer is swapped in, and saving / loading a network with an optical layer.
"""

from .resnet import (BasicBlock, ResNet, accuracy, load_classifier, reestimate_batchnorm, resnet18, save_classifier,
                     train_classifier)
from .shapes import CLASSES, make_shapes
