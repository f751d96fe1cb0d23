"""Errors tfquant raises: each names the thing at fault and what to do about it."""


class TFQuantError(Exception):
    """Base class of every error tfquant raises on purpose."""


class SpecError(TFQuantError, ValueError):
    """A quantization spec (bits, axis, ...) that cannot be realised."""


class RangeError(TFQuantError, ValueError):
    """A quantization range that is NaN, infinite or otherwise unusable."""


class ExportError(TFQuantError):
    """A graph that cannot be exported to an int8 TFLite flatbuffer."""


class ModelFileError(TFQuantError, ValueError):
    """A model file that is missing, unreadable or not what it claims to be."""


class DataError(TFQuantError, ValueError):
    """Input or calibration data of the wrong shape, dtype or content."""


class PlanKeyError(TFQuantError, KeyError):
    """A QuantPlan entry or tensor name the plan does not have."""

    def __str__(self) -> str:          # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""
