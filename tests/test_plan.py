"""QuantPlan: one plan for both routes, saved as JSON, edited, exported from and verified against.

The flatbuffers are compared tensor by tensor with `tfquant.inspect`: a JSON round trip must give
identical bytes, and an edited entry must change that one tensor's grid and nothing else.
"""
import os
import sys

import numpy as np
import pytest

import tfquant
from tfquant import QuantPlan
from tfquant.core import quant_params
from tfquant.errors import SpecError

HERE = os.path.dirname(os.path.abspath(__file__))
for sub in ("keras", "ptq"):
    if os.path.join(HERE, sub) not in sys.path:
        sys.path.insert(0, os.path.join(HERE, sub))

import ptq_models  # noqa: E402
import qat_models  # noqa: E402


def changed_tensors(a: bytes, b: bytes) -> list[str]:
    """Names of the tensors whose type, shape, scales, zero points or data differ."""
    ra, rb = tfquant.inspect(a), tfquant.inspect(b)
    assert [t.name for t in ra.tensors] == [t.name for t in rb.tensors]
    assert [o.op for o in ra.ops] == [o.op for o in rb.ops]
    out = []
    for ta, tb in zip(ra.tensors, rb.tensors):
        same = (ta.dtype, ta.shape, ta.scales, ta.zero_points) == (tb.dtype, tb.shape, tb.scales, tb.zero_points)
        if ta.data is not None or tb.data is not None:
            same = same and ta.data is not None and tb.data is not None and np.array_equal(ta.data, tb.data)
        if not same:
            out.append(ta.name)
    return out


@pytest.fixture(scope="module")
def ptq_result():
    return tfquant.ptq(ptq_models.keras3_model(), ptq_models.data(64, seed=1), progress=False,
                       steps=("cle", "bias_absorption", "bias_correction"))


def _logits_quantizer(result) -> str:
    softmax = [n for n in result.graph if n.type == "softmax"]
    assert len(softmax) == 1
    return result.plan.quantizer_of(softmax[0].inputs[0])


def test_ptq_plan_json_round_trip_gives_identical_flatbuffer(ptq_result, tmp_path):
    original = ptq_result.to_tflite()
    path = ptq_result.plan.save(tmp_path / "plan.json")
    loaded = QuantPlan.load(path)
    assert loaded.to_dict() == ptq_result.plan.to_dict()
    assert tfquant.to_tflite(ptq_result, plan=loaded) == original
    # every activation quantizer and every linear node's weights are entries
    kinds = [e.kind for e in loaded.entries()]
    assert kinds.count("weight") == len(ptq_result.graph.linear_nodes())
    assert kinds.count("activation") == len(loaded.owners)
    table = loaded.table()
    assert table.count("\n") == len(kinds)         # a header, then one line per entry
    assert all(e.name[-36:] in table for e in loaded.entries())


def test_ptq_edited_entry_changes_exactly_that_tensor(ptq_result):
    original = ptq_result.to_tflite()
    q = _logits_quantizer(ptq_result)
    lo, hi = ptq_result.plan.range_of(ptq_result.plan.owners[q][0])
    edited = QuantPlan.from_json(ptq_result.plan.to_json())
    edited.set_range(q, 2 * lo, 2 * hi)
    data = tfquant.to_tflite(ptq_result, plan=edited)
    changed = changed_tensors(original, data)
    assert len(changed) == 1, changed
    tensor = tfquant.inspect(data).tensor(changed[0])
    want = quant_params(2 * lo, 2 * hi, tfquant.QuantSpec.activation())
    assert tensor.scales[0] == pytest.approx(float(want.scale), rel=1e-6)
    assert tensor.zero_points[0] == int(want.zero_point)
    # the result itself is unchanged, and the edited flatbuffer verifies against the edited plan
    assert ptq_result.to_tflite() == original
    x = ptq_models.data(16, seed=2)
    assert tfquant.verify(data, ptq_result, x, plan=edited, kernels=("reference",)).exact_fraction == 1.0
    assert tfquant.verify(data, ptq_result, x, kernels=("reference",)).exact_fraction < 1.0


@pytest.fixture(scope="module")
def qat():
    return qat_models.train_and_export(qat_models.convnet)


def test_qat_plan_round_trip_and_edit(qat, tmp_path):
    qmodel = qat.qmodel
    plan = tfquant.keras.plan_of(qmodel)
    before = tfquant.keras.quantizer_state(qmodel)
    assert set(plan.ranges) == set(before)           # every activation quantizer, with its range
    assert all(plan.weight_specs[n].bits == 8 for n in plan.weight_specs) and plan.derived
    loaded = QuantPlan.load(plan.save(tmp_path / "qat_plan.json"))
    assert tfquant.to_tflite(qmodel, plan=loaded) == qat.tflite

    dense = [la for la in qmodel.layers if isinstance(la, tfquant.keras.QuantConv) and la.kind == "dense"]
    assert len(dense) == 1
    qid = f"{dense[0].name}/output"
    lo, hi = loaded.ranges[qid]
    loaded.set_range(qid, 3 * lo, 3 * hi)
    data = tfquant.to_tflite(qmodel, plan=loaded)
    changed = changed_tensors(qat.tflite, data)
    assert len(changed) == 1, changed
    assert tfquant.keras.quantizer_state(qmodel) == before     # the model keeps its own ranges
    assert tfquant.verify(data, qmodel, qat.x_test[:16], plan=loaded, kernels=("reference",)).exact_fraction == 1.0

    tfquant.keras.apply_plan(qmodel, loaded)
    try:
        assert tfquant.to_tflite(qmodel) == data
    finally:
        tfquant.keras.apply_plan(qmodel, plan)
    assert tfquant.to_tflite(qmodel) == qat.tflite


def test_plan_errors(ptq_result, qat, tmp_path):
    plan = ptq_result.plan.copy()
    fixed = next(iter(plan.fixed))
    with pytest.raises(SpecError, match="fixed range"):
        plan.set_range(fixed, -1.0, 1.0)
    with pytest.raises(SpecError, match="min < max"):
        plan.set_range(plan.calibrated_ids()[0], 1.0, -1.0)
    with pytest.raises(KeyError, match="no activation quantizer"):
        plan.set_range("nope", -1.0, 1.0)
    with pytest.raises(SpecError, match="does not belong to this model"):
        tfquant.to_tflite(ptq_result, plan=tfquant.keras.plan_of(qat.qmodel))
    with pytest.raises(SpecError, match="does not belong to this model"):
        tfquant.keras.apply_plan(qat.qmodel, plan)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        QuantPlan.load(bad)
    bad.write_text('{"format": "tfquant.QuantPlan/1", "qid": {}}')
    with pytest.raises(SpecError, match="malformed"):
        QuantPlan.load(bad)
    bad.write_text('{"format": "something else"}')
    with pytest.raises(SpecError, match="Not a tfquant plan"):
        QuantPlan.load(bad)
    with pytest.raises(SpecError, match="Cannot read plan"):
        QuantPlan.load(tmp_path / "missing.json")
    qplan = tfquant.keras.plan_of(qat.qmodel)
    qplan.set_precision(next(iter(qplan.ranges)), "float")
    with pytest.raises(SpecError, match=r"\(float\) out of int8: a QAT model exports int8 tensors only"):
        tfquant.keras.apply_plan(qat.qmodel, qplan)
    qplan.set_precision(next(iter(qplan.ranges)), "int16")
    with pytest.raises(SpecError, match=r"\(int16\) out of int8"):
        tfquant.keras.apply_plan(qat.qmodel, qplan)
    name = next(n for n in tfquant.keras.plan_of(qat.qmodel).derived)
    with pytest.raises(SpecError, match="recomputed from its weights"):
        tfquant.keras.plan_of(qat.qmodel).set_weight_range(name, -1.0, 1.0)


def test_ptq_mixed_precision_float_tensor(ptq_result):
    plan = ptq_result.plan.copy()
    dw = [n for n in ptq_result.graph.linear_nodes() if n.type == "depthwise"][0]
    assert plan.set_precision(dw.output(), "float") == [plan.quantizer_of(dw.output())]
    assert plan.non_int8() == [plan.quantizer_of(dw.output())]
    data = tfquant.to_tflite(ptq_result, plan=plan)
    report = tfquant.inspect(data)
    float_ops = [o.op for o in report.ops if o.is_float and o.op not in ("QUANTIZE", "DEQUANTIZE")]
    assert float_ops == ["DEPTHWISE_CONV_2D", "CONV_2D"]      # the producer and its consumer, nothing else
    assert [o.op for o in report.float_ops if o.op not in ("QUANTIZE", "DEQUANTIZE")] == float_ops
    x = ptq_models.data(16, seed=2)
    assert tfquant.verify(data, ptq_result, x, plan=plan, kernels=("reference",)).exact_fraction == 1.0
    # JSON keeps the precision; int8 again gives the original bytes back
    loaded = QuantPlan.from_json(plan.to_json())
    assert loaded.precision == plan.precision
    loaded.set_precision("*", "int8")
    assert tfquant.to_tflite(ptq_result, plan=loaded) == ptq_result.to_tflite()


def test_ptq_float_weights_alone_are_refused(ptq_result):
    plan = ptq_result.plan.copy()
    name = ptq_result.graph.linear_nodes()[-1].name
    plan.set_precision(name, "float")
    with pytest.raises(tfquant.ExportError, match="float weights between int8 tensors"):
        tfquant.to_tflite(ptq_result, plan=plan)
    with pytest.raises(SpecError, match="precision must be one of"):
        plan.set_precision(name, "int4")
    with pytest.raises(KeyError, match="No plan entry"):
        plan.set_precision("no/such/*", "float")


def test_inspect_lists_the_tensors_mixed_precision_left_in_float(ptq_result):
    assert tfquant.inspect(ptq_result.to_tflite()).non_int8_tensors == []
    plan = ptq_result.plan.copy()
    dw = [n for n in ptq_result.graph.linear_nodes() if n.type == "depthwise"][0]
    plan.set_precision(dw.output(), "float")
    report = tfquant.inspect(tfquant.to_tflite(ptq_result, plan=plan))
    floats = report.non_int8_tensors
    # the depthwise output, and the dequantized input / the float output around the two float ops
    assert len(floats) == 3 and all(t.dtype == "FLOAT32" for t in floats)
    assert "non-int8 activation tensors: 3" in report.table()
