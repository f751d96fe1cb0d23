"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package (no download at run time).

The package installs the four original idx files under /usr/share/datasets/fashion-mnist/;
`TFQUANT_FASHION_MNIST_DIR` points elsewhere (a directory with the same four file names).

Preprocessing (`preprocess`) maps uint8 pixels to float32 in [0, 1] (x / 255) with a channel
axis. The choice is deliberate: an int8 input tensor with scale 1/255 and zero point -128
represents every pixel value exactly, so the input QUANTIZE op of an int8 model loses nothing.
"""
from __future__ import annotations

import gzip
import os
from typing import Tuple

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_DIR = "TFQUANT_FASHION_MNIST_DIR"
NUM_CLASSES = 10
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


class FashionMnistNotFound(FileNotFoundError):
    """The idx files are missing: install Debian's dataset-fashion-mnist."""


def data_dir() -> str:
    return os.environ.get(ENV_DIR) or DEFAULT_DIR


def _read_idx(path: str, offset: int) -> np.ndarray:
    if not os.path.isfile(path):
        raise FashionMnistNotFound(
            f"Fashion-MNIST file not found: {path}. Install it with "
            f"`apt-get update && apt-get install -y dataset-fashion-mnist` "
            f"(or set {ENV_DIR} to a directory holding {', '.join(FILES.values())}).")
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load_fashion_mnist(directory: str | None = None
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train uint8 [60000,28,28], y_train uint8 [60000], x_test uint8 [10000,28,28],
    y_test uint8 [10000]); labels in 0..9."""
    directory = directory or data_dir()
    path = {k: os.path.join(directory, v) for k, v in FILES.items()}
    x_train = _read_idx(path["x_train"], 16).reshape(-1, 28, 28)
    y_train = _read_idx(path["y_train"], 8)
    x_test = _read_idx(path["x_test"], 16).reshape(-1, 28, 28)
    y_test = _read_idx(path["y_test"], 8)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"Fashion-MNIST in {directory}: image and label counts differ "
                         f"({len(x_train)}/{len(y_train)}, {len(x_test)}/{len(y_test)})")
    return x_train, y_train, x_test, y_test


def preprocess(x: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] (or [N,28,28,1]) -> float32 [N,28,28,1] in [0, 1] (x / 255)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    return x.astype(np.float32) / np.float32(255.0)
