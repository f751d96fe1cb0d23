"""Session fixtures: the SavedModels the PTQ tests quantize (each written once)."""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import ptq_models  # noqa: E402


@pytest.fixture(scope="session")
def keras3_dir(tmp_path_factory):
    return ptq_models.export_keras3(ptq_models.keras3_model(), str(tmp_path_factory.mktemp("k3") / "model"))


@pytest.fixture(scope="session")
def tf_keras_dir(tmp_path_factory):
    return ptq_models.export_tf_keras(str(tmp_path_factory.mktemp("tfk") / "model"))


@pytest.fixture(scope="session")
def module_dir(tmp_path_factory):
    return ptq_models.export_module(str(tmp_path_factory.mktemp("mod") / "model"), gate=False)


@pytest.fixture(scope="session")
def gated_module_dir(tmp_path_factory):
    """A tf.Module with ops the IR does not know (a sigmoid gate: Sigmoid, Mul)."""
    return ptq_models.export_module(str(tmp_path_factory.mktemp("gated") / "model"), gate=True)


@pytest.fixture(scope="session")
def calibration():
    return ptq_models.data(64, seed=1)


@pytest.fixture(scope="session")
def evaluation():
    return ptq_models.data(64, seed=2)
