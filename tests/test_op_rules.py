"""The TFLite rules table is one definition: QAT's and PTQ's views of it agree."""
import keras
import pytest

import tfquant
from tfquant.core import op_rules
from tfquant.graph.ir import SAME_SCALE_TYPES, TFLITE_OP_OF_TYPE
from tfquant.keras import registry


def test_same_scale_views_read_one_set():
    assert op_rules.SAME_SCALE_TF_OPS == {t for t, op in op_rules.SAME_SCALE_TF_TO_TFLITE.items()
                                          if op is None or op in op_rules.SAME_SCALE_OPS}
    assert SAME_SCALE_TYPES == set(TFLITE_OP_OF_TYPE)
    # every Keras pass-through layer names a TFLite op that keeps its input's grid (or none)
    assert all(op_rules.keeps_input_grid(op) for op in registry._PASSTHROUGH.values())
    assert registry.is_passthrough(keras.layers.Reshape((4,)))
    assert not registry.is_passthrough(keras.layers.Dense(4))
    # an op with its own grid is refused as a pass-through
    assert not op_rules.keeps_input_grid("CONV_2D") and not op_rules.keeps_input_grid("SOFTMAX")


def test_register_passthrough_checks_the_op():
    class Shuffle(keras.layers.Layer):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="does not keep its input's grid"):
        tfquant.keras.register_passthrough(Shuffle, "CONV_2D")
    assert not registry.is_passthrough(Shuffle())
    try:
        tfquant.keras.register_passthrough(Shuffle, "TRANSPOSE")
        assert registry.is_passthrough(Shuffle())
    finally:
        registry._PASSTHROUGH.pop(Shuffle, None)


def test_fixed_grids_by_name_and_by_tf_op_agree():
    assert op_rules.FIXED_RANGE_TF_OPS == {"Softmax": op_rules.FIXED_OUTPUT_RANGES["softmax"],
                                           "Sigmoid": op_rules.FIXED_OUTPUT_RANGES["sigmoid"],
                                           "Tanh": op_rules.FIXED_OUTPUT_RANGES["tanh"]}
    assert op_rules.FIXED_OUTPUT_RANGES["softmax"] == (0.0, 255 / 256)
