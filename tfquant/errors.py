"""Errors tfquant raises: each names the thing at fault and what to do about it.

    >>> raise DataError(f"Image {path!r} could not be read: {cause_text(e)}")
"""
import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TF_NOISE = re.compile(r"\{\{.*?\}\}|\s*\[Op:[^\]]*\]")


def cause_text(e: BaseException, limit: int = 200) -> str:
    """One clean line saying what an underlying library's exception said: its first non-empty
    line (or the converter's first `error:` line), without ANSI colour codes or Keras' "Arguments
    received by ..." trailer or TF's op annotations, at most `limit` characters."""
    text = _ANSI.sub("", str(e)).split("Arguments received by", 1)[0]
    text = _TF_NOISE.sub("", text)      # TF's "{{function_node ...}}" prefix and " [Op:Name]" suffix
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line.split("error:", 1)[1].strip() for line in lines if "error:" in line]
    line = (errors or lines or [type(e).__name__])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


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


class KernelAbortError(TFQuantError, RuntimeError):
    """Inputs on which a TFLite kernel would abort the process (a LiteRT assertion), refused first."""


class Interrupted(TFQuantError, KeyboardInterrupt):
    """The user pressed Ctrl-C during a long step (also a KeyboardInterrupt)."""
