"""tfquant.core: the quantization math every other package calls.

`QuantSpec` says how a tensor is quantized; `quant_params` turns a range into the TFLite
(scale, zero point) and the snapped FakeQuant range; `fake_quant` puts it in a graph; the range
estimators turn observed values into ranges.
"""
from tfquant.core.fake_quant import (
    fake_quant,
    fake_quant_bias,
    fake_quant_depthwise_kernel,
    fake_quant_kernel,
    quant_scale,
)
from tfquant.core.quant_params import (
    MIN_RANGE_WIDTH,
    QuantParams,
    converter_constant_params,
    converter_params,
    dequantize,
    quant_params,
    quantize,
    round_half_away,
    snap_range,
)
from tfquant.core.range_estimators import (
    ESTIMATORS,
    CrossEntropyRange,
    MinMaxRange,
    MovingAverageMinMaxRange,
    MSERange,
    PercentileRange,
    RangeEstimator,
    bn_range,
    fake_quant_np,
    make_estimator,
    moving_average,
)
from tfquant.core.spec import QuantSpec
from tfquant.core.bn_folding import bn_affine, fold_affine, scale_output_channels
from tfquant.core.plan import PlanEntry, QuantPlan
from tfquant.core.op_rules import (
    ACTIVATION_BOUNDS,
    AFFINE_TFLITE_OPS,
    FIXED_OUTPUT_RANGES,
    FUSED_ACTIVATIONS,
    LAYER_NORM_STEPS,
    DEFAULT_HARD_SWISH_LOWERING,
    HARD_SWISH_LOWERINGS,
    HARD_SWISH_SCALE,
    HARD_SWISH_OFFSET,
    HARD_SWISH_TFLITE_OP,
    LOOKUP_TABLE_OPS,
    LookupTableOp,
    LOGISTIC_RANGE,
    SOFTMAX_RANGE,
    TANH_RANGE,
    affine_parts,
    apply_fused_activation,
    constant_operand_range,
    hard_swish,
    lookup_table_op,
)
from tfquant.core.integer_kernels import get_simulation_mode, simulation_mode
from tfquant.core.quantized_ops import (
    kernel_range,
    quantized_add,
    quantized_affine,
    quantized_avg_pool,
    quantized_concat,
    quantized_constant,
    quantized_hard_swish,
    quantized_input,
    quantized_layer_norm,
    quantized_leaky_relu,
    quantized_linear,
    quantized_logistic,
    quantized_lookup_table,
    quantized_mean,
    quantized_mul,
    quantized_rsqrt,
    quantized_softmax,
    quantized_squared_difference,
)
