"""Fashion-MNIST loading and the benchmark network (benchmarks.data / benchmarks.models)."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from benchmarks.data import fashion_mnist as fm

HAVE_DATA = all(os.path.isfile(os.path.join(fm.data_dir(), f)) for f in fm.FILES.values())
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="apt-get install -y dataset-fashion-mnist")


@pytest.fixture(scope="module")
def data():
    return fm.load_fashion_mnist()


@needs_data
def test_shapes_dtypes_and_labels(data):
    x_train, y_train, x_test, y_test = data
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and x_test.dtype == np.uint8
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert y_train.min() == 0 and y_train.max() == 9
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [1000] * 10)
    # Real images: dark background, full pixel range, not constant.
    assert x_train.max() == 255 and x_train.min() == 0
    assert 60 < x_train[:1000].mean() < 90
    assert x_train[0, 0, 0] == 0 and x_train[0].std() > 10


@needs_data
def test_preprocess(data):
    x = fm.preprocess(data[2][:5])
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(np.round(x[..., 0] * 255).astype(np.uint8), data[2][:5])
    np.testing.assert_array_equal(fm.preprocess(np.array([[[0, 255]]], np.uint8)).ravel(), [0.0, 1.0])


def test_missing_dir_gives_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(fm.ENV_DIR, str(missing))
    with pytest.raises(FileNotFoundError) as info:
        fm.load_fashion_mnist()
    message = str(info.value)
    assert str(missing / "train-images-idx3-ubyte.gz") in message
    assert "apt-get install -y dataset-fashion-mnist" in message


def _write_idx(path, header: bytes, payload: np.ndarray):
    with gzip.open(path, "wb") as f:
        f.write(header + payload.astype(np.uint8).tobytes())


def test_override_dir_reads_idx_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = {n: rng.integers(0, 256, (n, 28, 28)) for n in (3, 2)}
    labels = {3: np.array([0, 9, 4]), 2: np.array([1, 2])}
    for split, n in (("train", 3), ("t10k", 2)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", b"\0" * 16, images[n])
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", b"\0" * 8, labels[n])
    monkeypatch.setenv(fm.ENV_DIR, str(tmp_path))
    x_train, y_train, x_test, y_test = fm.load_fashion_mnist()
    np.testing.assert_array_equal(x_train, images[3])
    np.testing.assert_array_equal(y_train, labels[3])
    np.testing.assert_array_equal(x_test, images[2])
    np.testing.assert_array_equal(y_test, labels[2])


# ---------------------------------------------------------------- the network

def test_network_architecture():
    import keras

    from benchmarks.models import fmnist_net

    model = fmnist_net.build_fmnist_net()
    assert tuple(model.input_shape) == (None, 28, 28, 1)
    assert tuple(model.output_shape) == (None, 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("DepthwiseConv2D") == 4
    assert kinds.count("Conv2D") == 6            # stem, four pointwise, head
    assert kinds.count("BatchNormalization") == 10
    assert kinds.count("Add") == 2
    assert kinds.count("GlobalAveragePooling2D") == 1
    assert kinds[-1] == "Dense" and model.layers[-1].units == 10
    assert model.layers[-1].activation is keras.activations.linear
    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    assert len(relus) == 8 and all(float(r.max_value) == 6.0 for r in relus)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            assert not layer.use_bias, layer.name
    # Every Add joins two tensors of the same shape (stride 1, equal channels).
    by_name = {layer.name: layer for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Add):
            shapes = {tuple(t.shape) for t in layer.input}
            assert len(shapes) == 1
    assert "block2_add" in by_name and "stem_conv" in by_name
    # Deterministic names: a second build has the same ones.
    assert [layer.name for layer in fmnist_net.build_fmnist_net().layers] == [layer.name for layer in model.layers]


@needs_data
def test_network_trains_a_few_steps(data):
    import keras

    from benchmarks.models import fmnist_net

    x = fm.preprocess(data[0][:512])
    y = data[1][:512].astype(np.int32)
    keras.utils.set_random_seed(0)
    model = fmnist_net._compile(fmnist_net.build_fmnist_net(), keras)
    before = model.evaluate(x, y, batch_size=128, verbose=0)[0]
    history = model.fit(x, y, batch_size=64, epochs=3, shuffle=True, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    assert losses[-1] < before


def test_weights_npz_round_trip(tmp_path):
    import keras

    from benchmarks.models import fmnist_net

    keras.utils.set_random_seed(1)
    a = fmnist_net.build_fmnist_net()
    # Move the BN statistics away from their initial values so that they are checked too.
    for layer in a.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma * 1.5, beta + 0.1, mean + 0.2, var * 2.0])
    keras.utils.set_random_seed(2)
    b = fmnist_net.build_fmnist_net()
    path = str(tmp_path / "w.npz")
    fmnist_net.save_weights_npz(a, path)
    with np.load(path) as saved:
        assert "stem_conv/0" in saved.files and "stem_bn/3" in saved.files and "logits/1" in saved.files
        assert saved["block1_dw/0"].shape == (3, 3, 16, 1)
    fmnist_net.load_weights_npz(b, path)
    x = np.random.default_rng(0).uniform(0, 1, (4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))


def test_cached_net_trains_once_and_caches(tmp_path, monkeypatch):
    import keras

    from benchmarks.models import fmnist_net

    monkeypatch.setenv("TFQUANT_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_train(epochs, n_train=None, **kwargs):
        calls.append((epochs, n_train))
        keras.utils.set_random_seed(3)
        return fmnist_net.build_fmnist_net()

    monkeypatch.setattr(fmnist_net, "train_fmnist_net", fake_train)
    first = fmnist_net.cached_fmnist_net(quick=True)
    path = fmnist_net.cached_weights_path(quick=True)
    assert calls == [(fmnist_net.QUICK_EPOCHS, fmnist_net.QUICK_SAMPLES)]
    assert path.startswith(str(tmp_path / "cache")) and os.path.isfile(path)
    assert fmnist_net.ARCH_TAG in os.path.basename(path)
    assert path != fmnist_net.cached_weights_path(quick=False)
    assert os.listdir(tmp_path / "cache") == [os.path.basename(path)]   # no temporary left behind

    def no_training(*args, **kwargs):
        raise AssertionError("the cached weights should have been loaded")

    monkeypatch.setattr(fmnist_net, "train_fmnist_net", no_training)
    second = fmnist_net.cached_fmnist_net(quick=True)
    for w1, w2 in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(w1, w2)


@pytest.mark.slow
@needs_data
def test_cached_full_network_accuracy(data):
    """The real cached network (trains for a few minutes the first time): about 90% on the test set."""
    from benchmarks.models import fmnist_net

    model = fmnist_net.cached_fmnist_net(quick=False)
    logits = model.predict(fm.preprocess(data[2]), batch_size=512, verbose=0)
    accuracy = np.mean(np.argmax(logits, -1) == data[3])
    assert accuracy > 0.88
