"""tfquant.keras: quantization-aware training for Keras 3, exported to TFLite int8.

    import tfquant
    qmodel = tfquant.quantize_model(model)                  # Functional / Sequential / nested
    tfquant.keras.calibrate(qmodel, x_train[:256])          # optional: initial ranges
    qmodel.compile(...); qmodel.fit(...)                    # unchanged training
    tfquant.to_tflite(qmodel, "model.tflite")
    tfquant.verify("model.tflite", qmodel, x_test)          # bit-exact simulation vs interpreter

BN is folded into the weights before they are fake-quantized; ReLU/ReLU6 are fused; each tensor
that is int8 on device passes through exactly one FakeQuant whose range is snapped by
`tfquant.core` to the converter's (scale, zero point). See `quantize` for the rewrite rules,
`quantizers` for the quantizers and `registry` to teach it your own layers.
"""
from tfquant.keras.calibration import calibrate
from tfquant.keras.config import QATConfig
from tfquant.keras.errors import AlreadyQuantizedError, ModelTypeError, WiringError
from tfquant.keras.layers import (
    QuantActivation,
    QuantAdd,
    QuantAveragePooling,
    QuantConcatenate,
    QuantConv,
    QuantGlobalAveragePooling,
    QuantizeInput,
    QuantizeWrapper,
    QuantLayer,
    QuantMultiply,
    QuantResize,
)
from tfquant.keras.from_ptq import InitReport, init_from_ptq
from tfquant.keras.plan import apply_plan, plan_of
from tfquant.keras.quantize import quantization_report, quantize_model
from tfquant.keras.quantizers import ActivationQuantizer, FixedQuantizer, WeightQuantizer
from tfquant.keras.registry import (
    QuantizeConfig,
    register_passthrough,
    register_quantize_config,
    unregister_quantize_config,
)
from tfquant.keras.report import LayerReport, QuantizationReport


def quantizer_state(qmodel) -> dict:
    """{"layer/quantizer": (min, max, initialized)} of every activation quantizer (for checks)."""
    out = {}
    for layer in qmodel._flatten_layers(include_self=False):
        if isinstance(layer, QuantLayer):
            for name, q in layer.quantizers().items():
                if isinstance(q, ActivationQuantizer):
                    out[f"{layer.name}/{name}"] = tuple(float(v.numpy()) for v in (q.min, q.max, q.initialized))
    return out


__all__ = [
    "quantize_model", "calibrate", "QATConfig", "quantization_report", "quantizer_state", "plan_of", "apply_plan",
    "init_from_ptq", "InitReport",
    "WeightQuantizer", "ActivationQuantizer", "FixedQuantizer",
    "QuantizeConfig", "register_quantize_config", "unregister_quantize_config", "register_passthrough",
    "QuantizationReport", "LayerReport", "ModelTypeError", "AlreadyQuantizedError", "WiringError",
    "QuantLayer", "QuantConv", "QuantizeInput", "QuantAdd", "QuantMultiply", "QuantConcatenate",
    "QuantAveragePooling", "QuantGlobalAveragePooling", "QuantResize", "QuantActivation", "QuantizeWrapper",
]
