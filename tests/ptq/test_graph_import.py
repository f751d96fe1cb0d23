"""tfquant.graph: import from the three kinds of SavedModel and Keras, IR, patterns, round trip."""
import re

import numpy as np
import pytest

import ptq_models
from ptq_models import first_output, rel_error, signature_fn
from tfquant.graph import (
    assign_quantizers,
    build_function,
    conv_bn_act,
    equalization_chains,
    fuse_activations,
    load_graph,
)
from tfquant.ptq import fold_batch_norms


def short(name: str) -> str:
    """The Keras layer of a node: StatefulPartitionedCall/functional_1/stem_1/convolution -> stem."""
    return re.sub(r"_\d+$", "", name.split("/")[2])


def _types(graph):
    return sorted({n.type for n in graph})


@pytest.mark.parametrize("source", ["keras3_dir", "tf_keras_dir", "module_dir"])
def test_import_round_trip_is_exact(source, request, evaluation):
    """The IR rebuilt as a tf.function computes what the SavedModel computes."""
    path = request.getfixturevalue(source)
    graph = load_graph(path)
    y = first_output(build_function(graph)(evaluation))
    assert rel_error(signature_fn(path)(evaluation), y) < 1e-6


def test_keras3_batch_norm_is_recognised(keras3_dir):
    """Keras 3 writes BN as Rsqrt/Mul/Sub on its variables: it becomes an affine node carrying
    the batch norm's gamma, beta, mean and variance."""
    graph = load_graph(keras3_dir)
    affines = [n for n in graph if n.type == "affine"]
    assert len(affines) == 5
    assert all(n.bn is not None for n in affines)
    model = ptq_models.keras3_model()
    gamma, beta, mean, var = model.get_layer("stem_bn").get_weights()
    stem_bn = next(n for n in affines if "stem_bn" in n.name)
    np.testing.assert_allclose(stem_bn.bn.gamma, gamma)
    np.testing.assert_allclose(stem_bn.bn.beta, beta)
    np.testing.assert_allclose(stem_bn.bn.var, var)
    assert {"conv2d", "depthwise", "matmul", "add", "pad", "concat", "mean", "softmax"} <= set(_types(graph))


def test_fused_batch_norm_and_tf_keras_layers(tf_keras_dir):
    graph = load_graph(tf_keras_dir)
    types = _types(graph)
    assert {"pad", "conv2d", "affine", "relu6", "depthwise", "relu", "avg_pool", "reshape", "matmul"} <= set(types)
    assert all(n.bn is not None for n in graph if n.type == "affine")
    assert graph.unknown_ops == []


def test_unknown_ops_pass_through_and_are_reported(gated_module_dir, evaluation):
    graph = load_graph(gated_module_dir)
    unknown = dict((op, name) for name, op in graph.unknown_ops)
    assert "Sigmoid" in unknown and "Mul" in unknown
    assert "Sigmoid" in graph.summary()
    y = build_function(graph)(evaluation)
    assert isinstance(y, dict) and set(y) == {"scores"}
    assert rel_error(signature_fn(gated_module_dir)(evaluation), y["scores"]) < 1e-6


def test_keras_model_in_memory():
    model = ptq_models.keras3_model(softmax=False)
    graph = load_graph(model)
    x = ptq_models.data(4)
    assert rel_error(model(x), first_output(build_function(graph)(x))) < 1e-6
    assert graph.output_structure == "single"


def test_patterns(keras3_dir):
    graph = load_graph(keras3_dir)
    triples = {short(n.name): (bn is not None, act.type if act else None)
               for n, bn, act in conv_bn_act(graph)}
    assert triples["stem"] == (True, "relu6")
    assert triples["project"] == (True, None)
    fold_batch_norms(graph)
    assert fuse_activations(graph) == 4
    chains = [[short(n.name) for n in c.layers] for c in equalization_chains(graph)]
    # the stem and dw2 outputs have two readers each: chains stop there; expand -> dw2 through Pad
    assert chains == [["dw", "project"], ["expand", "dw2"]]
    padded = equalization_chains(graph)[1]
    assert padded.pads[0] and padded.padded(0)
    chain = load_graph(ptq_models.chain_model(length=5))
    fold_batch_norms(chain)
    fuse_activations(chain)
    (c,) = equalization_chains(chain)
    assert [n.type for n in c.layers] == ["conv2d", "depthwise", "conv2d", "depthwise", "conv2d"]
    triplet = load_graph(ptq_models.chain_model(length=3))
    fold_batch_norms(triplet)
    fuse_activations(triplet)
    assert equalization_chains(triplet)[0].is_triplet


def test_quantizers_are_shared_where_tflite_needs_one_scale(keras3_dir):
    graph = load_graph(keras3_dir)
    fold_batch_norms(graph)
    fuse_activations(graph)
    plan = assign_quantizers(graph)
    by_type = {}
    for n in graph:
        by_type.setdefault(n.type, []).append(n)
    pad = by_type["pad"][0]
    assert plan.qid[pad.output()] == plan.qid[pad.inputs[0]]
    concat = by_type["concat"][0]
    assert len({plan.qid[r] for r in concat.inputs + [concat.output()]}) == 1
    softmax = by_type["softmax"][0]
    assert plan.qid[softmax.output()] in plan.fixed
    # every float tensor read by a quantized op has a quantizer
    for n in graph:
        for r in n.inputs:
            if graph.producer(r).type != "const":
                assert r in plan.qid
