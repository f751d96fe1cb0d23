"""tfquant: TensorFlow 2 / Keras 3 models to TFLite int8 models you can deploy with confidence.

    import tfquant
    tflite = tfquant.to_tflite(fake_quant_model, "model.tflite")
    print(tfquant.inspect("model.tflite").table())
    result = tfquant.verify("model.tflite", fake_quant_model, x, float_model=model)
"""
from tfquant.core import QuantPlan, QuantSpec, quant_params, simulation_mode
from tfquant.errors import (
    DataError,
    ExportError,
    Interrupted,
    ModelFileError,
    RangeError,
    SpecError,
    TFQuantError,
)
from tfquant.export import inspect, to_tflite, verify
from tfquant.keras import QATConfig, calibrate, quantize_model
from tfquant.ptq import PTQConfig, PTQResult, ptq   # the function shadows the package name

__all__ = [
    "DataError", "ExportError", "Interrupted", "ModelFileError", "PTQConfig", "PTQResult", "QATConfig", "QuantPlan", "QuantSpec",
    "RangeError", "SpecError", "TFQuantError", "calibrate", "inspect", "ptq", "quant_params",
    "quantize_model", "simulation_mode", "to_tflite", "verify",
]

__version__ = "0.1.0"
