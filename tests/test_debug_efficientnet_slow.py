"""tfquant.debug on EfficientNet-Lite0 quantized per-tensor without CLE: the report blames the layers
whose per-channel weight ranges a per-tensor grid cannot hold, names a depthwise layer among them,
recommends CLE / per-channel, and the per-channel fix it tries helps. Slow (~5 minutes)."""
import numpy as np
import pytest

import tfquant
import tfquant.debug

pytestmark = pytest.mark.slow


def test_efficientnet_per_tensor_without_cle_blames_weight_spread(tmp_path):
    lite0 = pytest.importorskip("benchmarks.models.efficientnet_lite0")
    photos = pytest.importorskip("benchmarks.data.photos")
    cal_u8, _ = photos.photo_crops(64, 8, seed=0)
    ev_u8, _ = photos.photo_crops(32, 8, seed=1)
    result = tfquant.ptq(lite0.load_efficientnet_lite0(), lite0.preprocess(cal_u8), progress=False,
                         per_channel=False, steps=(), weight_ranges="minmax")
    d = tfquant.debug.diagnose(result, lite0.preprocess(ev_u8), top=5)
    assert d.weights_only_db < d.activations_only_db          # the weights do the damage
    spread = [s for s in d.suspects if "per-channel weight ranges" in s.cause]
    assert len(spread) >= 2 and spread[0] is d.suspects[0]
    assert any("dw" in s.layer and "depthwise" in s.layer for s in spread)
    assert all("cross-layer equalization" in s.fix and "per-channel" in s.fix for s in spread)
    assert "per-channel weights" in d.fix_description and d.fixed_db > d.quantized_db + 1.0
    text = open(d.write_report(tmp_path / "report")).read()
    assert "cross-layer equalization" in text and np.isfinite(d.quantized_db)
