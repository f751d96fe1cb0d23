"""Calibration from a TFRecord of serialized tf.train.Example: decoded, streamed, checked up front."""
import numpy as np
import pytest
import tensorflow as tf

from tfquant.errors import DataError
from tfquant.ptq import PTQConfig
from tfquant.ptq.calibration import Calibration

SPEC = tf.TensorSpec([None, 16, 16, 3], tf.float32)


def feature(value) -> tf.train.Feature:
    value = np.asarray(value) if not isinstance(value, bytes) else value
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if np.issubdtype(value.dtype, np.integer):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=value.ravel().tolist()))
    return tf.train.Feature(float_list=tf.train.FloatList(value=value.ravel().tolist()))


def write_records(path, examples) -> str:
    with tf.io.TFRecordWriter(str(path)) as w:
        for ex in examples:
            if isinstance(ex, bytes):
                w.write(ex)
            else:
                w.write(tf.train.Example(features=tf.train.Features(
                    feature={k: feature(v) for k, v in ex.items()})).SerializeToString())
    return str(path)


def pixels(n: int, size=(20, 20), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3)).astype(np.uint8)


def png_records(path, images, labels=True) -> str:
    return write_records(path, [{"image/encoded": tf.io.encode_png(im).numpy(), **({"label": [i]} if labels else {})}
                                for i, im in enumerate(images)])


def test_float_feature_is_reshaped_to_the_input(tmp_path):
    x = np.random.default_rng(1).standard_normal((10, 16, 16, 3)).astype(np.float32)
    path = write_records(tmp_path / "cal.tfrecord", [{"x": s} for s in x])
    cal = Calibration.of(path, SPEC, PTQConfig())
    np.testing.assert_array_equal(cal.take(10, batch_size=4), x)      # float32 round trip: bit-exact
    assert cal.take(3).shape == (3, 16, 16, 3)                         # bounded by the sample count


def test_int64_pixels_and_encoded_images_are_normalised(tmp_path):
    px = pixels(5, (16, 16))
    ints = write_records(tmp_path / "px.tfrecords", [{"px": p} for p in px])
    got = Calibration.of(ints, SPEC, PTQConfig(image_mean=100.0, image_std=50.0)).take(5)
    np.testing.assert_array_equal(got, (px.astype(np.float32) - 100.0) / 50.0)
    big = pixels(6, (20, 24), seed=2)
    path = png_records(tmp_path / "img.tfrecord", big)
    got = Calibration.of(path, SPEC, PTQConfig(tfrecord_feature="image/encoded")).take(6)
    want = (tf.image.resize(big.astype(np.float32), (16, 16), method="bilinear").numpy() - 127.5) / 127.5
    np.testing.assert_array_equal(got, want)
    # a model of dynamic spatial size: the images take image_size
    dynamic = tf.TensorSpec([None, None, None, 3], tf.float32)
    got = Calibration.of(path, dynamic, PTQConfig(tfrecord_feature="image/encoded", image_size=(8, 12))).take(2)
    assert got.shape == (2, 8, 12, 3)
    with pytest.raises(DataError, match="input size is not fixed.*image_size"):
        Calibration.of(path, dynamic, PTQConfig(tfrecord_feature="image/encoded"))


def test_bad_records_get_one_clear_error(tmp_path):
    images = png_records(tmp_path / "img.tfrecord", pixels(3))
    with pytest.raises(DataError, match=r"hold 2 features \['image/encoded', 'label'\]: name the one"):
        Calibration.of(images, SPEC, PTQConfig())
    with pytest.raises(DataError, match=r"Record 0 of .* has no feature 'img'; its features: \['image/encoded', 'label'\]"):
        Calibration.of(images, SPEC, PTQConfig(tfrecord_feature="img"))
    with pytest.raises(DataError, match=r"holds 1 values per record; the model expects samples of shape \[16, 16, 3\]"):
        Calibration.of(images, SPEC, PTQConfig(tfrecord_feature="label"))
    short = write_records(tmp_path / "short.tfrecord", [{"x": np.zeros(768, np.float32)},
                                                        {"x": np.zeros(700, np.float32)}])
    with pytest.raises(DataError, match=r"Record 1 of .*: feature 'x' holds 700 float_list value\(s\), the first record 768"):
        Calibration.of(short, SPEC, PTQConfig())
    good = write_records(tmp_path / "good.tfrecord", [{"x": np.zeros(768, np.float32)}] * 3)
    data = bytearray(open(good, "rb").read())
    data[len(data) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt.tfrecord"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"corrupt\.tfrecord' is corrupt: corrupted record at \d+\. Rewrite it"):
        Calibration.of(str(corrupt), SPEC, PTQConfig())
    not_example = write_records(tmp_path / "junk.tfrecord", [b"\xff\xff\xff not a proto"])
    with pytest.raises(DataError, match="Record 0 of .* is not a serialized tf.train.Example"):
        Calibration.of(not_example, SPEC, PTQConfig())
    not_image = write_records(tmp_path / "notimg.tfrecord", [{"img": b"plain bytes, no image"}])
    with pytest.raises(DataError, match="could not be decoded as feature 'img' .*Unknown image file format"):
        Calibration.of(not_image, SPEC, PTQConfig())
    empty = write_records(tmp_path / "empty.tfrecord", [])
    with pytest.raises(DataError, match="holds no record"):
        Calibration.of(empty, SPEC, PTQConfig())
