"""The larger photo set (benchmarks.data.photos): cache, split by photo, crops, bootstrap."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("PIL")
from benchmarks.data import photos as P  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_cache = pytest.mark.skipif(bool(P.missing_cached_photos()),
                                 reason=f"run `bash {P.FETCH_SCRIPT}`")


def test_split_is_fixed_disjoint_and_covers_the_set():
    assert len(P.LARGE_SET) == len(set(P.LARGE_SET)) == 42
    cal, ev = P.photo_split()
    assert len(cal) == 12 and len(ev) == 30
    assert not set(cal) & set(ev) and set(cal) | set(ev) == set(P.LARGE_SET)
    assert P.photo_split() == (cal, ev)
    other_cal, _ = P.photo_split(seed=P.SPLIT_SEED + 1)
    assert other_cal != cal
    assert len(P.photo_split(n_calibration=5)[0]) == 5
    for bad in (0, 42, -1):
        with pytest.raises(ValueError, match="n_calibration"):
            P.photo_split(n_calibration=bad)


@needs_cache
def test_cached_photos_are_real_downscaled_photos():
    photos = P.load_photos(list(P.CACHED_PHOTOS))
    for name, img in photos.items():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert 300 <= min(img.shape[:2]) <= P.CACHE_MAX_SIDE, (name, img.shape)
        assert len(np.unique(img)) > 100, name
        chroma = max(np.abs(img[..., i].astype(int) - img[..., j]).mean()
                     for i, j in ((0, 1), (1, 2), (0, 2)))
        if name in P.MONOCHROME_PHOTOS:
            assert chroma == 0, name
        else:
            assert chroma > 5, name
    assert photos["Path"].shape == (640, 1024, 3)       # "1920x1080.jpg" is 2560x1600, downscaled
    assert photos["baboon"].shape == (512, 512, 3)      # small enough: kept as it is


@needs_cache
def test_evaluation_set_keeps_the_two_sides_apart():
    s = P.evaluation_set(n_calibration=24, crops_per_photo=2, size=48)
    assert s.calibration.shape == (24, 48, 48, 3) and s.evaluation.shape == (60, 48, 48, 3)
    assert (s.calibration_photos, s.evaluation_photos) == P.photo_split()
    assert sorted(set(s.sources)) == s.evaluation_photos
    assert all(s.sources.count(n) == 2 for n in s.evaluation_photos)
    # The calibration crops are cut from the calibration photos (rendered again from them).
    photos = P.load_photos(s.calibration_photos)
    specs = P.draw_crop_specs(24, {n: photos[n].shape[:2] for n in s.calibration_photos}, seed=0)
    np.testing.assert_array_equal(P.render_crops(photos, specs, 48), s.calibration)
    rows = lambda a: {bytes(x) for x in a.reshape(len(a), -1)}  # noqa: E731
    assert len(rows(s.evaluation)) == 60 and not rows(s.calibration) & rows(s.evaluation)
    again = P.evaluation_set(n_calibration=24, crops_per_photo=2, size=48)
    np.testing.assert_array_equal(again.evaluation, s.evaluation)
    with pytest.raises(ValueError, match="crops_per_photo"):
        P.evaluation_set(4, crops_per_photo=0)


def test_missing_cache_names_the_script(tmp_path, monkeypatch):
    monkeypatch.setenv("TFQUANT_CACHE", str(tmp_path))
    assert P.missing_cached_photos() == list(P.CACHED_PHOTOS)
    with pytest.raises(P.PhotosNotFound, match=r"run `bash scripts/fetch_photos\.sh` once"):
        P.load_photo("aero1")
    from benchmarks import suite_generalization

    with pytest.raises(P.PhotosNotFound, match=r"34 of the 34 .*scripts/fetch_photos\.sh"):
        suite_generalization.run(quick=True, models=["lite0"])
    with pytest.raises(ValueError, match="unknown model"):
        suite_generalization.run(quick=True, models=["lite9"])


def test_import_from_extracted_packages(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("TFQUANT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "extracted"
    with pytest.raises(P.PhotosNotFound, match=r"34 photo\(s\) not under .*dpkg-deb -x"):
        P.import_cached_photos(str(root))
    rng = np.random.default_rng(0)
    for name, (_, rel) in P.CACHED_PHOTOS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (700, 1300) if name == "Path" else (40, 50)
        if name in P.GREYSCALE_PHOTOS:
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), "L").save(path)
        else:
            Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path)
    assert P.main(["--import-from", str(root)]) == 0
    assert P.missing_cached_photos() == [] and P.main(["--check"]) == 0
    assert P.load_photo("Path").shape == (640, 1189, 3)          # shorter side 700 -> 640
    grey = P.load_photo("basketball1")
    assert grey.shape == (40, 50, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    with Image.open(root / P.CACHED_PHOTOS["aero1"][1]) as im:
        np.testing.assert_array_equal(P.load_photo("aero1"), np.asarray(im.convert("RGB")))
    assert not [f for f in os.listdir(P.photo_cache_dir()) if f.startswith(".")]


def test_fetch_script_without_apt_get_notes_and_succeeds(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "id", "mktemp", "chmod", "rm", "cat"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    os.symlink(sys.executable, bin_dir / "python")
    env = dict(os.environ, PATH=str(bin_dir), TFQUANT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([shutil.which("bash"), "scripts/fetch_photos.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "apt-get not found" in proc.stderr and "not cached" in proc.stderr
    assert not (tmp_path / "cache" / P.CACHE_FOLDER).exists()
    if not P.missing_cached_photos():     # a complete cache: the script only checks it
        env["TFQUANT_CACHE"] = os.path.dirname(P.photo_cache_dir())
        proc = subprocess.run([shutil.which("bash"), "scripts/fetch_photos.sh"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert f"34 photos cached in {P.photo_cache_dir()}" in proc.stdout


def _logits(rng, n):
    return rng.normal(size=(n, 10))


def test_photo_bootstrap_resamples_photos():
    from benchmarks import harness

    rng = np.random.default_rng(0)
    ref = _logits(rng, 12)
    test = ref + 0.01 * rng.normal(size=ref.shape)
    sources = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    test[8:] = -ref[8:]          # photo c: every crop disagrees
    b = P.photo_bootstrap(ref, test, sources)
    assert b.agreement == pytest.approx(8 / 12)
    # Three photos, one all wrong: a resample holds no c (8/27) or only c (1/27) often enough
    # that the 95% interval spans 0..1, far wider than resampling 12 independent crops would.
    assert b.agreement_ci == (0.0, 1.0)
    assert b.sqnr_db == pytest.approx(harness.sqnr_db(ref, test), abs=1e-9)
    assert b.sqnr_ci[0] <= b.sqnr_db <= b.sqnr_ci[1]
    # No resample beats the better of photos a and b alone; resamples without c come near it.
    best = max(harness.sqnr_db(ref[:4], test[:4]), harness.sqnr_db(ref[4:8], test[4:8]))
    assert b.sqnr_ci[1] <= best + 1e-9 and b.sqnr_ci[1] > b.sqnr_db + 10
    with pytest.raises(ValueError, match="one source per sample"):
        P.photo_bootstrap(ref, test, sources[:-1])
    with pytest.raises(ValueError, match="level"):
        P.photo_bootstrap(ref, test, sources, level=1.0)
