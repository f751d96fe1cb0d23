import pytest

from tfquant.core import QuantSpec
from tfquant.errors import SpecError


def test_weight_and_activation_presets():
    w = QuantSpec.weight()
    assert (w.qmin, w.qmax, w.symmetric, w.per_channel) == (-127, 127, True, True)
    a = QuantSpec.activation()
    assert (a.qmin, a.qmax, a.symmetric, a.per_channel) == (-128, 127, False, False)
    assert QuantSpec.weight(bits=4).qmin == -7 and QuantSpec.weight(bits=4).qmax == 7
    assert QuantSpec(bits=8, signed=False).qmax == 255
    assert QuantSpec(bits=16).storage_dtype == "int16"


@pytest.mark.parametrize("bits", [0, 1, 17, 32])
def test_bits_out_of_range_is_a_clear_error(bits):
    with pytest.raises(SpecError, match=f"bits={bits}"):
        QuantSpec(bits=bits)


def test_bits_must_be_int():
    with pytest.raises(SpecError, match="must be an int"):
        QuantSpec(bits=8.0)


def test_config_round_trip():
    spec = QuantSpec(bits=4, symmetric=True, narrow_range=True, per_channel=True, axis=0)
    assert QuantSpec.from_config(spec.get_config()) == spec
    with pytest.raises(SpecError, match="unknown keys"):
        QuantSpec.from_config({"bits": 8, "granularity": "channel"})
