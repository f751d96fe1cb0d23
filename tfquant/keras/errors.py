"""Errors of tfquant's QAT (`tfquant.keras`): each names the model or layer at fault and what to do."""
from tfquant.errors import SpecError, TFQuantError

__all__ = ["ModelTypeError", "AlreadyQuantizedError", "SpecError", "WiringError"]


class ModelTypeError(TFQuantError, TypeError):
    """A model tfquant cannot rewrite: subclassed, unbuilt, or not a Keras model at all."""


class AlreadyQuantizedError(TFQuantError, ValueError):
    """`quantize_model` was given a model that already holds tfquant layers."""


class WiringError(TFQuantError, RuntimeError):
    """A tfquant layer was used outside the Functional graph that tells it its input's quantizer."""
