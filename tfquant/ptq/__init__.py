"""tfquant.ptq: post-training quantization of SavedModels and Keras models (Nagel et al. 2021).

    >>> import tfquant
    >>> sim = tfquant.ptq("saved_model_dir", calibration=x_cal, output="model.tflite")
    >>> sim = tfquant.ptq(keras_model, x_cal, per_channel=False, steps=("cle", "bias_correction"))
    >>> sim = tfquant.ptq(model, config=tfquant.PTQConfig(data_free=True, input_range=(-1, 1)))

`tfquant.ptq` is the pipeline function (`tfquant.ptq.pipeline.ptq`); import this package's names
with `from tfquant.ptq import PTQConfig, ...` (or use `tfquant.PTQConfig`). The steps are also
usable one by one on a `tfquant.graph.Graph`: `fold_batch_norms`, `equalize`,
`absorb_high_biases`, `analytic_bias_correction`, `run_layerwise` (empirical bias correction and
AdaRound), `set_weight_ranges`, `calibrate_activations`, `set_data_free_ranges`.
"""
from tfquant.ptq.adaround import AdaRoundResult, adaround_layer
from tfquant.ptq.bias_correction import analytic_bias_correction
from tfquant.ptq.bn_folding import fold_batch_norms, unfolded_batch_norms
from tfquant.ptq.calibration import Calibration
from tfquant.ptq.cle import (
    ChannelRange,
    absorb_high_biases,
    equalize,
    input_channel_range,
    output_channel_range,
    relu6_to_relu,
)
from tfquant.ptq.config import DATA_FREE_STEPS, DEFAULT_STEPS, STEPS, PTQConfig
from tfquant.ptq.layerwise import layer_output_shift, quantized_kernel, run_layerwise
from tfquant.ptq.pipeline import PTQReport, PTQResult, ptq
from tfquant.ptq.ranges import (
    calibrate_activations,
    pre_activation_ranges,
    set_data_free_ranges,
    set_weight_ranges,
)
from tfquant.ptq.stats import clipped_normal_moments, propagate_stats
