"""tfquant.graph: SavedModel | Keras model -> frozen GraphDef -> a small IR -> tf.function.

    >>> graph = load_graph("saved_model_dir")                   # or a Keras model
    >>> print(graph.summary())                                   # op types, ops passed through
    >>> fuse_activations(graph)                                   # after BN folding
    >>> plan = assign_quantizers(graph)                           # one quantizer per tensor
    >>> float_fn = build_function(graph)                          # the (transformed) float model
    >>> sim = build_function(graph, plan, mode="quant")           # the FakeQuant simulation

`graph` knows nothing of quantization algorithms (those are in `tfquant.ptq`) and never computes
a scale itself: quantized ops come from `tfquant.core`.
"""
from tfquant.graph.emit import (
    MODES,
    Emitter,
    QuantPlan,
    assign_quantizers,
    build_function,
    node_kernel_on_grid,
    input_signature,
    linear_op,
    linear_runs_int8,
)
from tfquant.graph.importer import concrete_function, load_graph
from tfquant.graph.ir import (
    ACTIVATION_TYPES,
    LINEAR_TYPES,
    BNStats,
    Graph,
    InputSpec,
    Node,
    Stats,
    ref,
    split_ref,
)
from tfquant.graph.patterns import (
    Chain,
    bn_folds,
    conv_bn_act,
    equalization_chains,
    fuse_activations,
    fuse_hard_swish,
    split_affines,
    has_effective_padding,
)
