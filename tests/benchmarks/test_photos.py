"""The photo fidelity set (benchmarks.data.photos): real photos, seeded disjoint crops."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PIL")
from benchmarks.data import photos as P  # noqa: E402

try:
    P.load_photos()
except P.PhotosNotFound as e:  # pragma: no cover
    pytest.skip(str(e), allow_module_level=True)


def _rows(a):
    return {bytes(x) for x in a.reshape(len(a), -1)}


def test_load_photos_are_real_rgb_photos():
    photos = P.load_photos()
    assert set(photos) == set(P.PHOTOS) and len(photos) >= 8
    assert photos["chelsea"].shape == (300, 451, 3)
    assert photos["coffee"].shape == (400, 600, 3)
    for name, img in photos.items():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 256, name
        # Colour photos: channels differ, many distinct values, not binary.
        assert np.abs(img[..., 0].astype(int) - img[..., 2]).mean() > 5, name
        assert len(np.unique(img)) > 200, name


def test_unknown_photo():
    with pytest.raises(ValueError, match="unknown photo"):
        P.load_photos(["chelsea", "no_such_photo"])


def test_crops_shapes_seeded_and_disjoint():
    cal, ev = P.photo_crops(24, 40, seed=0)
    assert cal.shape == (24, 224, 224, 3) and cal.dtype == np.uint8
    assert ev.shape == (40, 224, 224, 3) and ev.dtype == np.uint8
    cal2, ev2 = P.photo_crops(24, 40, seed=0)
    np.testing.assert_array_equal(cal, cal2)
    np.testing.assert_array_equal(ev, ev2)
    cal3, _ = P.photo_crops(24, 40, seed=1)
    assert not np.array_equal(cal, cal3)
    # No image appears twice, within a set or across the two.
    assert len(_rows(cal)) == 24 and len(_rows(ev)) == 40
    assert not _rows(cal) & _rows(ev)
    # Real image content (not blank).
    assert cal.std() > 20 and ev.std() > 20


def test_crop_specs_even_distinct_and_in_bounds():
    photos = P.load_photos()
    shapes = {n: img.shape[:2] for n, img in photos.items()}
    specs = P.draw_crop_specs(10 * len(shapes) + 3, shapes, seed=0)
    assert len(set(specs)) == len(specs)
    counts = {n: sum(s.photo == n for s in specs) for n in shapes}
    assert max(counts.values()) - min(counts.values()) <= 1
    flips = sum(s.flip for s in specs)
    assert 0.25 * len(specs) < flips < 0.75 * len(specs)
    scales = []
    for s in specs:
        h, w = shapes[s.photo]
        assert 0 <= s.x0 and s.x0 + s.side <= w and 0 <= s.y0 and s.y0 + s.side <= h
        scales.append(s.side / min(h, w))
    assert P.MIN_SCALE - 0.01 <= min(scales) and max(scales) <= P.MAX_SCALE
    assert max(scales) - min(scales) > 0.4
    # The split in photo_crops is a prefix / suffix of this one stream.
    cal, ev = P.photo_crops(5, 7, seed=3)
    stream = P.render_crops(photos, P.draw_crop_specs(12, shapes, seed=3))
    np.testing.assert_array_equal(cal, stream[:5])
    np.testing.assert_array_equal(ev, stream[5:])


def test_render_crop_geometry_and_flip():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100] = 255  # white left half
    photos = {"p": img}
    plain, flipped = P.render_crops(photos, [P.CropSpec("p", 50, 0, 100, False),
                                             P.CropSpec("p", 50, 0, 100, True)], size=32)
    assert plain[:, :14].min() == 255 and plain[:, 18:].max() == 0
    np.testing.assert_array_equal(flipped, plain[:, ::-1])


def test_sizes_and_empty_sets():
    cal, ev = P.photo_crops(0, 3, seed=0, size=64)
    assert cal.shape == (0, 64, 64, 3) and cal.dtype == np.uint8
    assert ev.shape == (3, 64, 64, 3)


@pytest.mark.parametrize("args, match", [
    ((4, -1), "n_evaluation"),
    ((-2, 4), "n_calibration"),
    ((2.5, 4), "n_calibration"),
    ((True, 4), "n_calibration"),
])
def test_bad_counts(args, match):
    with pytest.raises(ValueError, match=match):
        P.photo_crops(*args)


def test_bad_size():
    with pytest.raises(ValueError, match="size"):
        P.photo_crops(2, 2, size=0)


def test_evaluation_sources_name_the_photo_of_each_evaluation_crop():
    names = ["chelsea", "coffee", "rocket"]
    sources = P.evaluation_sources(4, 9, seed=0, names=names)
    assert len(sources) == 9 and set(sources) == set(names)
    _, ev = P.photo_crops(4, 9, seed=0, size=32, names=names)
    # Each crop equals a crop rendered from the photo it is said to come from.
    photos = P.load_photos(names)
    specs = P.draw_crop_specs(13, {n: photos[n].shape[:2] for n in names}, seed=0)[4:]
    assert [s.photo for s in specs] == sources
    np.testing.assert_array_equal(P.render_crops(photos, specs, 32), ev)
