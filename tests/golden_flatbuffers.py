"""A fixed set of flatbuffers whose bytes a refactor must not move, and the recipes that make them.

Each recipe builds one int8 flatbuffer from fixed seeds and data: the bundled hand-built example,
the QAT test models (W8A8 and W4A8), the Fashion-MNIST benchmark network after a short QAT fit,
the small PTQ models through several pipelines, and EfficientNet-Lite0 through tfquant.ptq
per-tensor, per-channel (default pipeline) and data-free. `GOLDEN_FILE` holds their sha256, the
sha256 of their values alone (`values_sha256`: tensor names left out) and of their structure
(`structure_sha256`: ops, and tensors' types and shapes, without scales or constants).

Values and bytes depend on the machine as well as on the code: calibration and QAT run float
kernels that TF (oneDNN, Eigen) picks by the CPU's vector instructions, and a range one float
ulp apart moves a scale. `GOLDEN_FILE` names the machine it was recorded on (`machine_id`);
elsewhere only the structure is compared. On a new machine, record at the commit the goldens
describe (before changing anything), then check the change against that.

    python -m tests.golden_flatbuffers --record          # (re)write tests/golden_flatbuffers.json
    python -m tests.golden_flatbuffers --check           # print which recipes moved

Record only when a change is meant to move bytes, and say which and why in
`tests/test_golden_flatbuffers.py` (CHANGED).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Callable, Dict


HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_FILE = os.path.join(HERE, "golden_flatbuffers.json")
for sub in ("keras", "ptq"):
    if os.path.join(HERE, sub) not in sys.path:
        sys.path.insert(0, os.path.join(HERE, sub))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_ISA_PREFIXES = ("sse", "ssse", "avx", "amx", "fma", "f16c", "asimd", "sve")


def machine_id() -> str:
    """What a recipe's float arithmetic depends on beyond the code: TensorFlow's version, whether
    its oneDNN kernels are on, the architecture and the CPU's vector instruction sets."""
    import platform

    import tensorflow as tf

    flags: list[str] = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            line = next((ln for ln in f if ln.startswith(("flags", "Features"))), "")
        flags = sorted({x for x in line.split(":", 1)[-1].split() if x.startswith(_ISA_PREFIXES) or "vnni" in x})
    except OSError:
        pass
    onednn = "off" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0" else "on"
    isa = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:12]
    return f"tensorflow {tf.__version__}, oneDNN {onednn}, {platform.machine()}, {len(flags)} ISA flags {isa}"


def _ops_and_tensors_sha256(data: bytes, tensor_fields) -> str:
    """sha256 of each op's type, inputs and outputs, then `tensor_fields(t)` (bytes) of each tensor."""
    import tfquant

    report = tfquant.inspect(data)
    h = hashlib.sha256()
    for op in report.ops:
        h.update(repr((op.op, op.inputs, op.outputs)).encode())
    for t in report.tensors:
        h.update(tensor_fields(t))
    return h.hexdigest()


def values_sha256(data: bytes) -> str:
    """sha256 of what the flatbuffer computes with, tensor names left out: each op's type, inputs
    and outputs, and each tensor's type, shape, scales, zero points, axis and constant data. A
    change that renames tensors only (TF's auto-numbered op names) keeps it; op options are not in it."""
    def fields(t) -> bytes:
        head = repr((t.dtype, t.shape, t.scales, t.zero_points, t.quantized_dimension)).encode()
        return head + (t.data.tobytes() if t.data is not None else b"")
    return _ops_and_tensors_sha256(data, fields)


def structure_sha256(data: bytes) -> str:
    """sha256 of the flatbuffer's structure: each op's type, inputs and outputs, and each tensor's
    type, shape, quantized axis and number of scales. The same on every machine."""
    return _ops_and_tensors_sha256(
        data, lambda t: repr((t.dtype, t.shape, t.quantized_dimension, len(t.scales))).encode())


def fingerprint(data: bytes) -> Dict[str, str]:
    return {"sha256": sha256(data), "values_sha256": values_sha256(data),
            "structure_sha256": structure_sha256(data)}


# ---- recipes ------------------------------------------------------------------------------------
def handbuilt() -> bytes:
    import tfquant
    from testdata import handbuilt_model

    return tfquant.to_tflite(handbuilt_model.build().__call__)


def _qat_model(name: str, weight_bits: int = 8) -> Callable[[], bytes]:
    def recipe() -> bytes:
        import qat_models
        import tfquant

        config = None if weight_bits == 8 else tfquant.QATConfig(weight_bits=weight_bits)
        return qat_models.train_and_export(qat_models.MODELS[name], config).tflite
    return recipe


def _fmnist_qat(weight_bits: int) -> Callable[[], bytes]:
    """The benchmark network from a fixed seed (untrained float weights), calibrated on 256 real
    images, then 8 QAT steps of 64 images without shuffling."""
    def recipe() -> bytes:
        import keras

        import tfquant
        from benchmarks.data.fashion_mnist import load_fashion_mnist, preprocess
        from benchmarks.models.fmnist_net import build_fmnist_net

        x_train, y_train, _, _ = load_fashion_mnist()
        x, y = preprocess(x_train[:512]), y_train[:512]
        keras.utils.set_random_seed(0)
        model = build_fmnist_net()
        qmodel = tfquant.quantize_model(model, tfquant.QATConfig(weight_bits=weight_bits))
        tfquant.calibrate(qmodel, x[:256], batch_size=64)
        qmodel.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        qmodel.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
        return tfquant.to_tflite(qmodel)
    return recipe


def _small_ptq(model: str, **options) -> Callable[[], bytes]:
    def recipe() -> bytes:
        import ptq_models
        import tfquant

        build = {"keras3": ptq_models.keras3_model, "chain": ptq_models.chain_model}[model]
        data = None if options.get("data_free") else ptq_models.data(64, seed=1)
        return tfquant.ptq(build(), data, progress=False, **options).to_tflite()
    return recipe


_EFFICIENTNET: Dict[str, object] = {}


def _efficientnet(**options) -> Callable[[], bytes]:
    """EfficientNet-Lite0 (Keras model) through tfquant.ptq, 16 calibration crops."""
    def recipe() -> bytes:
        import tfquant
        from benchmarks.data.photos import photo_crops
        from benchmarks.models.efficientnet_lite0 import load_efficientnet_lite0, preprocess

        if not _EFFICIENTNET:
            cal_u8, _ = photo_crops(16, 8, seed=0)
            _EFFICIENTNET["cal"] = preprocess(cal_u8)
            _EFFICIENTNET["model"] = load_efficientnet_lite0()
        data = None if options.get("data_free") else _EFFICIENTNET["cal"]
        return tfquant.ptq(_EFFICIENTNET["model"], data, progress=False, **options).to_tflite()
    return recipe


EFFICIENTNET_INPUT_RANGE = (-127.0 / 128.0, 1.0)
WITHOUT_RECONSTRUCTION = ("cle", "bias_absorption", "bias_correction")

RECIPES: Dict[str, Callable[[], bytes]] = {
    "handbuilt": handbuilt,
    **{f"qat_{name}_w8": _qat_model(name) for name in
       ("convnet", "sequence_net", "decoder_net", "gating_net", "nested_net")},
    "qat_convnet_w4": _qat_model("convnet", 4),
    "fmnist_qat_w8a8": _fmnist_qat(8),
    "fmnist_qat_w4a8": _fmnist_qat(4),
    "ptq_keras3_default": _small_ptq("keras3"),
    "ptq_keras3_per_tensor_mse": _small_ptq("keras3", per_channel=False, ranges="mse"),
    "ptq_keras3_adaround": _small_ptq("keras3", steps=("bias_correction", "adaround"), adaround_iterations=50),
    "ptq_keras3_data_free": _small_ptq("keras3", data_free=True, input_range=(-1.0, 1.0)),
    "ptq_chain_percentile": _small_ptq("chain", ranges="percentile"),
    # the pipeline without reconstruction (the default before issue 13), per-tensor with min-max
    # weights (the per-tensor default before MSE); AdaRound on EfficientNet takes minutes, and
    # the small ptq_keras3_* recipes guard the default steps
    "efficientnet_ptq_per_tensor": _efficientnet(per_channel=False, steps=WITHOUT_RECONSTRUCTION,
                                                 weight_ranges="minmax"),
    "efficientnet_ptq_per_channel": _efficientnet(per_channel=True, steps=WITHOUT_RECONSTRUCTION),
    "efficientnet_ptq_data_free": _efficientnet(per_channel=True, data_free=True,
                                                input_range=EFFICIENTNET_INPUT_RANGE),
}


def build(name: str) -> bytes:
    """The flatbuffer of recipe `name`, from a fresh Keras session (auto-generated layer names,
    which the flatbuffer's tensor names carry, then do not depend on what ran before)."""
    import keras

    keras.backend.clear_session()
    return RECIPES[name]()


def load_golden() -> dict:
    """{"machine": the `machine_id` it was recorded on, "recipes": {name: fingerprint}}."""
    with open(GOLDEN_FILE, encoding="utf-8") as f:
        return json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the hashes to GOLDEN_FILE")
    parser.add_argument("--check", action="store_true", help="compare with GOLDEN_FILE")
    parser.add_argument("--only", nargs="*", help="recipes to run (default: all)")
    args = parser.parse_args(argv)
    names = args.only or list(RECIPES)
    hashes = {}
    for name in names:
        hashes[name] = fingerprint(build(name))
        print(f"{name:36s} {hashes[name]['sha256']}", flush=True)
    if args.check:
        golden = load_golden()
        recorded = golden["recipes"]
        if golden["machine"] != machine_id():
            print(f"recorded on another machine ({golden['machine']}; this is {machine_id()}): "
                  "bytes and values are not comparable, only the structure")
        for key, label in (("structure_sha256", "structure moved"), ("values_sha256", "values moved"),
                           ("sha256", "moved")):
            moved = [n for n, h in hashes.items() if recorded.get(n, {}).get(key) != h[key]]
            print(f"{label}: " + (", ".join(moved) if moved else "none"))
        return 1 if any(recorded.get(n, {}).get("sha256") != h["sha256"] for n, h in hashes.items()) else 0
    if args.record:
        golden = load_golden() if os.path.exists(GOLDEN_FILE) else {"recipes": {}}
        if golden.get("machine") not in (None, machine_id()) and set(names) != set(RECIPES):
            print("recorded on another machine: record every recipe here (no --only)", file=sys.stderr)
            return 2
        golden["machine"] = machine_id()
        golden["recipes"].update(hashes)
        golden["recipes"] = dict(sorted(golden["recipes"].items()))
        tmp = GOLDEN_FILE + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(golden, f, indent=1)
            f.write("\n")
        os.replace(tmp, GOLDEN_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
