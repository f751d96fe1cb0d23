"""Calibration data, streamed in batches with bounded memory, checked against the model's input.

    >>> cal = Calibration.of(x_cal, input_spec)                  # numpy array [N, ...]
    >>> cal = Calibration.of(tf_dataset, input_spec)             # batched or not; (x, y) -> x
    >>> cal = Calibration.of("images/", input_spec, config)      # a folder of images
    >>> cal = Calibration.of("calibration.npy", input_spec)      # memory-mapped
    >>> cal = Calibration.of("cal.tfrecord", input_spec, config) # serialized tf.train.Example
    >>> for batch in cal.batches(16, limit=256): ...             # float32 numpy batches

Every batch is checked as it streams: float dtype, the model's per-sample shape, finite values;
an empty source raises `DataError`.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf

from tfquant.errors import DataError, cause_text
from tfquant.ptq.config import DEFAULT_MAX_CALIBRATION_SAMPLES

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TFRECORD_EXTENSIONS = (".tfrecord", ".tfrecords")


class Calibration:
    """A source of calibration samples for a model input of shape `input_shape` ([None, ...])."""

    def __init__(self, source, input_shape: list, describe: str, config=None):
        self.source = source
        self.input_shape = list(input_shape) if input_shape is not None else None
        self.describe = describe
        self.config = config
        self._warned_short = False

    # ---- construction -----------------------------------------------------------------
    @classmethod
    def of(cls, data, input_spec, config=None) -> "Calibration":
        shape = input_spec.shape
        if isinstance(data, Calibration):
            return data
        if isinstance(data, (str, os.PathLike)):
            path = os.fspath(data)
            if not os.path.exists(path):
                raise DataError(f"Calibration source {path!r} does not exist.")
            if os.path.isdir(path):
                return cls(_ImageFolder(path, shape, config), shape, f"images in {path!r}", config)
            if path.endswith(".npy"):
                try:
                    array = np.load(path, mmap_mode="r", allow_pickle=False)
                except Exception as e:  # noqa: BLE001
                    raise DataError(f"Calibration file {path!r} is not a readable .npy array: {cause_text(e)}") from e
                return cls(array, shape, f"array in {path!r}", config)
            if path.endswith(TFRECORD_EXTENSIONS):
                source = _TFRecord(path, shape, config)
                return cls(source, shape, f"feature {source.key!r} of {path!r}", config)
            raise DataError(f"Calibration source {path!r} is neither a folder of images, a .npy file nor a "
                            f"TFRecord ({', '.join(TFRECORD_EXTENSIONS)}) of tf.train.Example.")
        if isinstance(data, tf.data.Dataset):
            return cls(data, shape, "tf.data.Dataset", config)
        if isinstance(data, (np.ndarray, tf.Tensor, list, tuple)):
            ragged = DataError("Calibration data is a ragged or mixed sequence: pass one array "
                               "[N, ...] of samples of the model's input shape.")
            try:
                array = np.asarray(data)
            except ValueError as e:
                raise ragged from e
            except Exception as e:  # noqa: BLE001
                raise DataError(f"Calibration data could not be read as an array: {cause_text(e)}") from e
            if array.dtype == object:
                raise ragged
            return cls(array, shape, "array", config)
        raise DataError(f"Calibration data of type {type(data).__name__} is not supported: pass a "
                        "numpy array, a tf.data.Dataset, a folder of images, a .npy file or a .tfrecord file.")

    # ---- checks -----------------------------------------------------------------------
    def _check(self, batch: np.ndarray) -> np.ndarray:
        if not (np.issubdtype(batch.dtype, np.floating)):
            raise DataError(
                f"Calibration data must be floating point, got {batch.dtype} ({self.describe}): "
                "preprocess the samples as the model expects (e.g. scale uint8 pixels), or pass a "
                "folder of images with image_mean / image_std.")
        want = self.input_shape
        if want is not None:
            got = list(batch.shape[1:])
            if len(got) != len(want) - 1 or any(w is not None and w != g for w, g in zip(want[1:], got)):
                raise DataError(f"Calibration samples have shape {got} but the model expects "
                                f"{['?' if w is None else w for w in want[1:]]} ({self.describe}).")
        if not np.all(np.isfinite(batch)):
            raise DataError(f"Calibration data contains NaN or Inf values ({self.describe}).")
        return batch.astype(np.float32, copy=False)

    # ---- streaming --------------------------------------------------------------------
    def _raw_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        src = self.source
        if isinstance(src, np.ndarray):
            if src.ndim == 0:
                raise DataError("Calibration data is a scalar, not a batch of samples.")
            for start in range(0, src.shape[0], batch_size):
                yield np.asarray(src[start:start + batch_size])
        elif isinstance(src, tf.data.Dataset):
            yield from self._dataset_batches(src, batch_size)
        else:
            yield from src.batches(batch_size)

    def _dataset_batches(self, ds: tf.data.Dataset, batch_size: int) -> Iterator[np.ndarray]:
        rank = len(self.input_shape) if self.input_shape is not None else None
        spec = ds.element_spec
        if isinstance(spec, (tuple, list)):
            ds = ds.map(lambda *e: e[0])
            spec = ds.element_spec
        elif isinstance(spec, dict):
            raise DataError("A calibration dataset of dicts is not supported: map it to the input tensor.")
        if not isinstance(spec, tf.TensorSpec):
            raise DataError(f"Calibration dataset elements must be tensors, got {spec}.")
        if rank is not None and spec.shape.rank == rank - 1:
            ds = ds.batch(batch_size)
        elif rank is not None and spec.shape.rank != rank:
            raise DataError(f"Calibration dataset elements have rank {spec.shape.rank}; the model input has "
                            f"rank {rank} (batched) or {rank - 1} (one sample).")
        for element in ds:
            yield element.numpy()

    def batches(self, batch_size: int, limit: Optional[int] = None, asked: bool = False) -> Iterator[np.ndarray]:
        """Checked float32 batches of at most `batch_size`, `limit` samples in all.
        Raises `DataError` when the source yields no sample; warns (once) when `asked` and the
        source holds fewer than `limit`."""
        seen = 0
        pending: list[np.ndarray] = []
        count = 0
        for raw in self._guarded(self._raw_batches(batch_size)):
            batch = self._check(np.asarray(raw))
            if batch.shape[0] == 0:
                continue
            if limit is not None and seen + batch.shape[0] > limit:
                batch = batch[:limit - seen]
            pending.append(batch)
            count += batch.shape[0]
            seen += batch.shape[0]
            while count >= batch_size:
                joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield joined[:batch_size]
                rest = joined[batch_size:]
                pending, count = ([rest] if rest.shape[0] else []), rest.shape[0]
            if limit is not None and seen >= limit:
                break
        if count:
            yield np.concatenate(pending) if len(pending) > 1 else pending[0]
        if seen == 0:
            raise DataError(f"The calibration set is empty ({self.describe}).")
        if asked and limit is not None and seen < limit and not self._warned_short:
            self._warned_short = True
            warnings.warn(f"Calibration asked for {limit} samples (max_calibration_samples) but the "
                          f"source holds {seen} ({self.describe}): the ranges come from those {seen}.",
                          UserWarning, stacklevel=2)

    def _guarded(self, raws):
        """The source's batches; an error inside a tf.data pipeline becomes a DataError."""
        import tensorflow as tf

        iterator = iter(raws)
        while True:
            try:
                raw = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError as e:
                raise DataError(f"The calibration data source failed while being read ({self.describe}): "
                                f"{type(e).__name__}: {cause_text(e)}") from None
            yield raw

    def take(self, n: int, batch_size: int = 64) -> np.ndarray:
        """The first `n` samples (or all there are) as one array."""
        return np.concatenate(list(self.batches(batch_size, limit=n)))


class _ImageFolder:
    """Images of a folder, resized to the model's input and normalised, loaded lazily."""

    def __init__(self, path: str, input_shape, config):
        self.path = path
        self.files = sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.lower().endswith(IMAGE_EXTENSIONS))
        if not self.files:
            raise DataError(f"The folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        if input_shape is None or len(input_shape) != 4:
            raise DataError("A folder of images calibrates a model whose input is [N, H, W, C] images.")
        size = getattr(config, "image_size", None)
        h, w, c = input_shape[1:]
        if size is not None:
            h, w = size
        if h is None or w is None:
            raise DataError("The model's input size is not fixed: set PTQConfig.image_size.")
        if c not in (1, 3, None):
            raise DataError(f"The model expects {c} channels: a folder of images gives 1 or 3.")
        self.size, self.channels = (int(h), int(w)), (c or 3)
        self.mean = float(getattr(config, "image_mean", 127.5))
        self.std = float(getattr(config, "image_std", 127.5))

    def _load(self, file: str) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(file) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
                arr = np.asarray(im, np.float32)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"Image {file!r} could not be read: {cause_text(e)}") from e
        if arr.ndim == 2:
            arr = arr[..., None]
        return (arr - self.mean) / self.std

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.files), batch_size):
            yield np.stack([self._load(f) for f in self.files[start:start + batch_size]])


def _record_error(path: str, e: Exception) -> DataError:
    """A tf.data read error on a TFRecord as one line naming the file and the byte offset."""
    first = cause_text(e)
    where = re.search(r"(corrupted|truncated) record at \d+", first)
    return DataError(f"The TFRecord {path!r} is corrupt: {where.group(0) if where else first[:200]}. "
                     "Rewrite it, uncompressed (tf.io.TFRecordWriter), or pass another calibration source.")


class _TFRecord:
    """Serialized tf.train.Example records, one feature of each as a calibration sample, streamed
    with tf.data. A bytes feature is an encoded image (tf.io.decode_image: PNG, JPEG, BMP, GIF)
    resized to the model's input (or `config.image_size`) and normalised as
    (pixel - image_mean) / image_std; an int64 list holds raw pixels (normalised the same way) and
    a float list preprocessed values, each reshaped to one sample of the model's input shape.

    The records up to `config.calibration_limit` are checked when the source is made (before
    any pipeline step): readable (no corrupt or truncated record), each a tf.train.Example holding
    the feature, of the kind and length of the first; the first one is decoded.
    """

    def __init__(self, path: str, input_shape, config):
        import tensorflow as tf
        from google.protobuf.message import DecodeError

        self.path = path
        if input_shape is None or len(input_shape) < 2:
            raise DataError(f"A TFRecord calibrates a model whose input is a batch [N, ...]; this one is "
                            f"{input_shape}.")
        self.mean = float(getattr(config, "image_mean", 127.5))
        self.std = float(getattr(config, "image_std", 127.5))
        wanted = getattr(config, "tfrecord_feature", None)
        limit = config.calibration_limit if config is not None else DEFAULT_MAX_CALIBRATION_SAMPLES
        self.key, self.kind, length, count = wanted, None, None, 0
        try:
            for i, raw in enumerate(tf.data.TFRecordDataset(path).take(limit)):
                try:
                    example = tf.train.Example.FromString(raw.numpy())
                except DecodeError:
                    raise DataError(f"Record {i} of {path!r} is not a serialized tf.train.Example.") from None
                features = example.features.feature
                if self.key is None:
                    if len(features) != 1:
                        raise DataError(f"The records of {path!r} hold {len(features)} features "
                                        f"{sorted(features)}: name the one to calibrate with "
                                        "(tfrecord_feature, --tfrecord_feature).")
                    self.key = next(iter(features))
                if self.key not in features:
                    raise DataError(f"Record {i} of {path!r} has no feature {self.key!r}; its features: "
                                    f"{sorted(features)}.")
                feature = features[self.key]
                kind = feature.WhichOneof("kind")
                values = getattr(feature, kind).value if kind else []
                if self.kind is None:
                    self.kind, length = kind, len(values)
                if kind != self.kind or (kind != "bytes_list" and len(values) != length) or \
                        (kind == "bytes_list" and len(values) != 1):
                    what = f"{len(values)} {kind or 'empty'} value(s)"
                    raise DataError(f"Record {i} of {path!r}: feature {self.key!r} holds {what}, the first "
                                    f"record {length} {self.kind} value(s); every record needs one sample "
                                    "of the same kind and size (one encoded image for a bytes feature).")
                count += 1
        except tf.errors.OpError as e:
            raise _record_error(path, e) from None
        if count == 0:
            raise DataError(f"The TFRecord {path!r} holds no record.")
        self.shape = self._sample_shape(list(input_shape[1:]), config, length)
        next(self.batches(1))               # decode the first record now: a bad image fails here

    def _sample_shape(self, shape: list, config, length: int) -> list:
        size = getattr(config, "image_size", None)
        if size is not None and len(shape) == 3:
            shape = [int(size[0]), int(size[1]), shape[2]]
        if self.kind == "bytes_list":
            if len(shape) != 3 or shape[2] not in (1, 3, None):
                raise DataError(f"Encoded images in {self.path!r} calibrate a model whose input is [N, H, W, "
                                f"1 or 3] images; this one expects {shape}.")
            if shape[0] is None or shape[1] is None:
                raise DataError("The model's input size is not fixed: set the size the TFRecord's images are "
                                "resized to (PTQConfig.image_size, --image_size).")
            return [shape[0], shape[1], shape[2] or 3]
        if any(d is None for d in shape):
            raise DataError(f"The model's input shape {['?' if d is None else d for d in shape]} is not fixed: "
                            f"the {self.kind} feature {self.key!r} of {self.path!r} cannot be reshaped to it.")
        if length != int(np.prod(shape)):
            raise DataError(f"Feature {self.key!r} of {self.path!r} holds {length} values per record; the model "
                            f"expects samples of shape {shape} ({int(np.prod(shape))} values).")
        return shape

    def _dataset(self, batch_size: int):
        import tensorflow as tf

        dtype = {"bytes_list": tf.string, "int64_list": tf.int64, "float_list": tf.float32}[self.kind]
        spec = {self.key: tf.io.FixedLenFeature([] if self.kind == "bytes_list" else [int(np.prod(self.shape))],
                                                dtype)}
        h, w, c = (self.shape + [None, None, None])[:3]
        mean, std, kind, key, shape = self.mean, self.std, self.kind, self.key, self.shape

        def decode(record):
            value = tf.io.parse_single_example(record, spec)[key]
            if kind == "bytes_list":
                image = tf.io.decode_image(value, channels=c, expand_animations=False)
                image = tf.image.resize(tf.cast(image, tf.float32), (h, w), method="bilinear")
                return (image - mean) / std
            value = tf.reshape(value, shape)
            return (tf.cast(value, tf.float32) - mean) / std if kind == "int64_list" else value

        return tf.data.TFRecordDataset(self.path).map(decode).batch(batch_size)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        import tensorflow as tf

        iterator = iter(self._dataset(batch_size))
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError as e:
                if isinstance(e, tf.errors.DataLossError):
                    raise _record_error(self.path, e) from None
                raise DataError(f"A record of {self.path!r} could not be decoded as feature {self.key!r} "
                                f"({type(e).__name__}: {cause_text(e, 160)}).") from None
            yield batch.numpy()
