"""The photo fidelity set: real RGB photos shipped inside the scikit-image and scikit-learn wheels.

No labelled ImageNet images can be downloaded here, so the EfficientNet benchmark measures
*fidelity* (top-1 agreement with the float model, logit SQNR) on random crops and flips of real
photos, with calibration crops kept apart from evaluation crops.

Photos (`PHOTOS`; all 3-channel natural photographs; scikit-image's greyscale, binary, synthetic
and microscopy images -- e.g. horse.png, a binary RGBA silhouette -- are left out, and so is
motorcycle_right.png, the other half of a stereo pair with motorcycle_left.png):
    scikit-image  skimage/data/      astronaut.png chelsea.png coffee.png motorcycle_left.png
                                     rocket.jpg hubble_deep_field.jpg
    scikit-learn  sklearn/datasets/images/  china.jpg flower.jpg
Files are located with importlib (no skimage / sklearn import) and read with Pillow; crops are
cut and resized with Pillow (bilinear, antialiased): no TensorFlow needed.

A crop is a tuple (photo, x0, y0, side, flip): a square box whose side is a random fraction
0.35..1.0 of the photo's shorter side at a random position, optionally flipped left-right, then
resized to size x size. `photo_crops` draws distinct tuples from one seeded stream, photos taken
in turn (so every set is spread evenly over the photos), and gives the first n_calibration to
calibration and the next n_evaluation to evaluation: the two sets never share a crop.

The larger evaluation set (`LARGE_SET`, 42 photos): the 8 above plus 34 natural photos from two
Debian packages, fetched once by `scripts/fetch_photos.sh` (`apt-get download` + `dpkg-deb -x`;
called by scripts/setup.sh) into `<cache dir>/photos_v1/` (cache dir: `$TFQUANT_CACHE` or
~/.cache/tfquant), as PNGs whose shorter side is at most `CACHE_MAX_SIDE` px (decoding stays
cheap). Nothing is downloaded at run time: a missing cache raises PhotosNotFound naming the script.
    opencv-doc  usr/share/doc/opencv-doc/examples/data/: 24 sample photos (chessboards, logos,
                text, synthetic shapes and digits left out); basketball1 and box_in_scene are
                greyscale photos, replicated to 3 channels.
    plasma-workspace-wallpapers  usr/share/wallpapers/NAME/contents/images/: 10 photo
                wallpapers (drawn or abstract ones left out), one size each: 1920x1080 when
                present (in this package a 2560x1600 picture under that name), else the smallest
                whose shorter side is >= 512 px. ColdRipple is a
                black-and-white photo (three equal channels).
`photo_split()` splits LARGE_SET *by photo*, fixed by a seeded shuffle (SPLIT_SEED):
N_CALIBRATION_PHOTOS = 12 calibration photos and 30 evaluation photos. `evaluation_set()` cuts
calibration crops from the calibration photos only and evaluation crops (a fixed number per
photo) from the evaluation photos only; `photo_bootstrap()` gives intervals of top-1 agreement
and logit SQNR that resample evaluation *photos* (crops of one photo are not independent).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import tempfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

# name -> (top-level package, distribution to install, path inside the package)
PHOTOS = {
    "astronaut": ("skimage", "scikit-image", "data/astronaut.png"),
    "chelsea": ("skimage", "scikit-image", "data/chelsea.png"),
    "coffee": ("skimage", "scikit-image", "data/coffee.png"),
    "motorcycle": ("skimage", "scikit-image", "data/motorcycle_left.png"),
    "rocket": ("skimage", "scikit-image", "data/rocket.jpg"),
    "hubble_deep_field": ("skimage", "scikit-image", "data/hubble_deep_field.jpg"),
    "china": ("sklearn", "scikit-learn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "scikit-learn", "datasets/images/flower.jpg"),
}
MIN_SCALE, MAX_SCALE = 0.35, 1.0
DEFAULT_SIZE = 224

_OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data/"
_WALLPAPERS = "usr/share/wallpapers/"
# name -> (Debian package, path of the chosen file inside the extracted package)
CACHED_PHOTOS = {
    **{name: ("opencv-doc", _OPENCV_DATA + f"{name}.{ext}") for name, ext in (
        ("aero1", "jpg"), ("aero3", "jpg"), ("aloeL", "jpg"), ("apple", "jpg"),
        ("baboon", "jpg"), ("basketball1", "png"), ("board", "jpg"), ("box_in_scene", "png"),
        ("building", "jpg"), ("butterfly", "jpg"), ("chicky_512", "png"),
        ("ela_original", "jpg"), ("fruits", "jpg"), ("graf1", "png"), ("home", "jpg"),
        ("leuvenA", "jpg"), ("licenseplate_motion", "jpg"), ("messi5", "jpg"),
        ("orange", "jpg"), ("rubberwhale1", "png"), ("smarties", "png"),
        ("squirrel_cls", "jpg"), ("starry_night", "jpg"), ("stuff", "jpg"))},
    **{name: ("plasma-workspace-wallpapers", _WALLPAPERS + f"{folder}/contents/images/{file}")
       for name, folder, file in (
        ("BytheWater", "BytheWater", "1920x1080.jpg"), ("ColdRipple", "ColdRipple", "1920x1080.jpg"),
        ("DarkestHour", "DarkestHour", "1920x1080.jpg"),
        ("ColorfulCups", "ColorfulCups", "2560x1600.jpg"),   # its only size
        ("EveningGlow", "EveningGlow", "1920x1080.jpg"), ("FallenLeaf", "FallenLeaf", "1920x1080.jpg"),
        ("Path", "Path", "1920x1080.jpg"), ("Shell", "Shell", "720x1440.jpg"),
        ("Patak", "Patak", "1080x1920.png"), ("summer_1am", "summer_1am", "1920x1080.jpg"))},
}
GREYSCALE_PHOTOS = ("basketball1", "box_in_scene")   # greyscale photos, as 3 equal channels
MONOCHROME_PHOTOS = GREYSCALE_PHOTOS + ("ColdRipple",)  # ColdRipple: a black-and-white RGB JPEG
LARGE_SET = tuple(PHOTOS) + tuple(CACHED_PHOTOS)
CACHE_FOLDER = "photos_v1"      # bump when the selection or CACHE_MAX_SIDE changes
CACHE_MAX_SIDE = 640            # cached photos: shorter side at most this (Lanczos downscale)
FETCH_SCRIPT = "scripts/fetch_photos.sh"
SPLIT_SEED = 13
N_CALIBRATION_PHOTOS = 12


class PhotosNotFound(FileNotFoundError):
    """A photo's wheel (scikit-image or scikit-learn) is not installed."""


class CropSpec(NamedTuple):
    photo: str
    x0: int
    y0: int
    side: int
    flip: bool


def photo_cache_dir() -> str:
    """Folder of the cached Debian photos: `<$TFQUANT_CACHE or ~/.cache/tfquant>/photos_v1`."""
    from benchmarks.models.efficientnet_lite0 import cache_dir

    return os.path.join(cache_dir(), CACHE_FOLDER)


def photo_path(name: str) -> str:
    """Absolute path of photo `name`: inside its installed wheel (the package is not imported),
    or, for CACHED_PHOTOS, in `photo_cache_dir()`."""
    if name in CACHED_PHOTOS:
        path = os.path.join(photo_cache_dir(), f"{name}.png")
        if os.path.isfile(path):
            return path
        raise PhotosNotFound(f"photo {name!r} (Debian {CACHED_PHOTOS[name][0]}) is not in "
                             f"{photo_cache_dir()}: run `bash {FETCH_SCRIPT}` once.")
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; known: {', '.join(LARGE_SET)}")
    package, distribution, relpath = PHOTOS[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in locations:
        path = os.path.join(root, *relpath.split("/"))
        if os.path.isfile(path):
            return path
    raise PhotosNotFound(f"photo {name!r} ({package}/{relpath}) not found: install it with "
                         f"`pip install {distribution}`.")


def load_photo(name: str) -> np.ndarray:
    """Photo `name` as uint8 [H, W, 3] RGB."""
    from PIL import Image

    with Image.open(photo_path(name)) as im:
        colour = ("RGB", "RGBA", "P", "CMYK", "YCbCr") + (("L",) if name in GREYSCALE_PHOTOS else ())
        if im.mode not in colour:
            raise ValueError(f"photo {name!r} is not a colour image (PIL mode {im.mode})")
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"photo {name!r} has shape {rgb.shape}, expected [H, W, 3]")
    return rgb


def load_photos(names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """{name: uint8 [H, W, 3] RGB} for `names` (default: every photo in PHOTOS, in order)."""
    names = list(PHOTOS) if names is None else list(names)
    if not names:
        raise ValueError("no photos requested")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate photo names in {names}")
    return {n: load_photo(n) for n in names}


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def draw_crop_specs(n: int, shapes: Dict[str, Tuple[int, int]], seed: int = 0,
                    min_scale: float = MIN_SCALE, max_scale: float = MAX_SCALE) -> List[CropSpec]:
    """`n` distinct crops, seeded, the k-th one from photo k mod len(shapes) (in `shapes`'
    order). `shapes` maps photo name -> (height, width)."""
    n = _check_count("n", n)
    if not shapes:
        raise ValueError("no photos to crop")
    if not 0.0 < min_scale <= max_scale <= 1.0:
        raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
    rng = np.random.default_rng(seed)
    names = list(shapes)
    seen, specs = set(), []
    attempts, max_attempts = 0, 100 * n + 1000
    while len(specs) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(f"could not draw {n} distinct crops from {len(names)} photos")
        name = names[len(specs) % len(names)]
        h, w = shapes[name]
        short = min(h, w)
        side = int(np.clip(round(rng.uniform(min_scale, max_scale) * short), 1, short))
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        flip = bool(rng.integers(0, 2))
        spec = CropSpec(name, x0, y0, side, flip)
        if spec in seen:
            continue
        seen.add(spec)
        specs.append(spec)
    return specs


def render_crops(photos: Dict[str, np.ndarray], specs: Sequence[CropSpec],
                 size: int = DEFAULT_SIZE) -> np.ndarray:
    """uint8 [len(specs), size, size, 3]: each box resized (bilinear, antialiased) and flipped."""
    from PIL import Image

    out = np.empty((len(specs), size, size, 3), np.uint8)
    images = {}
    for i, s in enumerate(specs):
        if s.photo not in images:
            images[s.photo] = Image.fromarray(photos[s.photo])
        box = (s.x0, s.y0, s.x0 + s.side, s.y0 + s.side)
        crop = np.asarray(images[s.photo].resize((size, size), Image.BILINEAR, box=box))
        out[i] = crop[:, ::-1] if s.flip else crop
    return out


def _split_specs(n_calibration: int, n_evaluation: int, seed: int, names: Optional[Sequence[str]]):
    """(photos, calibration specs, evaluation specs) as `photo_crops` draws them."""
    n_calibration = _check_count("n_calibration", n_calibration)
    n_evaluation = _check_count("n_evaluation", n_evaluation)
    photos = load_photos(names)
    shapes = {n: img.shape[:2] for n, img in photos.items()}
    specs = draw_crop_specs(n_calibration + n_evaluation, shapes, seed=seed)
    return photos, specs[:n_calibration], specs[n_calibration:]


def photo_crops(n_calibration: int, n_evaluation: int, seed: int = 0, size: int = DEFAULT_SIZE,
                names: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(calibration uint8 [n_calibration, size, size, 3], evaluation uint8 [n_evaluation, size,
    size, 3]): seeded random crops and flips of the photos, spread evenly over them; no crop is
    in both sets. Preprocess them for the model (e.g. efficientnet_lite0.preprocess)."""
    size = _check_count("size", size)
    if size < 1:
        raise ValueError("size must be >= 1")
    photos, cal_specs, eval_specs = _split_specs(n_calibration, n_evaluation, seed, names)
    return render_crops(photos, cal_specs, size), render_crops(photos, eval_specs, size)


def evaluation_sources(n_calibration: int, n_evaluation: int, seed: int = 0,
                       names: Optional[Sequence[str]] = None) -> List[str]:
    """The photo each of `photo_crops`' evaluation crops (same arguments) was cut from: crops of
    one photo are not independent samples, so confidence intervals resample photos.

        >>> evaluation_sources(64, 320)[:2]
        ['astronaut', 'chelsea']
    """
    return [s.photo for s in _split_specs(n_calibration, n_evaluation, seed, names)[2]]


# ----------------------------------------------------------------------------- the larger set
def missing_cached_photos() -> List[str]:
    """CACHED_PHOTOS not yet in `photo_cache_dir()` (empty once scripts/fetch_photos.sh ran)."""
    folder = photo_cache_dir()
    return [n for n in CACHED_PHOTOS if not os.path.isfile(os.path.join(folder, f"{n}.png"))]


def import_cached_photos(extracted_root: str, max_side: int = CACHE_MAX_SIDE) -> List[str]:
    """Copies CACHED_PHOTOS from `extracted_root` (where `dpkg-deb -x` unpacked opencv-doc and
    plasma-workspace-wallpapers) into `photo_cache_dir()` as PNGs, downscaled (Lanczos) so that
    the shorter side is at most `max_side`. Each file is written to a temporary name and renamed
    into place. Returns the names written.

        python -m benchmarks.data.photos --import-from /tmp/extracted
    """
    from PIL import Image

    missing = [f"{n} ({rel})" for n, (_, rel) in CACHED_PHOTOS.items()
               if not os.path.isfile(os.path.join(extracted_root, rel))]
    if missing:
        raise PhotosNotFound(f"{len(missing)} photo(s) not under {extracted_root}, e.g. "
                             f"{missing[0]}: extract opencv-doc and plasma-workspace-wallpapers "
                             f"there with `dpkg-deb -x FILE.deb {extracted_root}`.")
    folder = photo_cache_dir()
    os.makedirs(folder, exist_ok=True)
    written = []
    for name, (_, rel) in CACHED_PHOTOS.items():
        with Image.open(os.path.join(extracted_root, rel)) as im:
            im = im.convert("L" if name in GREYSCALE_PHOTOS else "RGB")
            short = min(im.size)
            if short > max_side:
                w, h = im.size
                im = im.resize((round(w * max_side / short), round(h * max_side / short)),
                               Image.LANCZOS)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}_", suffix=".png", dir=folder)
            os.close(fd)
            try:
                im.save(tmp, format="PNG")
                os.replace(tmp, os.path.join(folder, f"{name}.png"))
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        written.append(name)
    return written


def photo_split(seed: int = SPLIT_SEED, n_calibration: int = N_CALIBRATION_PHOTOS
                ) -> Tuple[List[str], List[str]]:
    """(calibration photos, evaluation photos): LARGE_SET split by photo with a seeded shuffle;
    the default (seed 13, 12 calibration photos) is the benchmark's fixed split.

        >>> cal_names, eval_names = photo_split()     # 12 and 30 names, disjoint
    """
    n_calibration = _check_count("n_calibration", n_calibration)
    if not 0 < n_calibration < len(LARGE_SET):
        raise ValueError(f"n_calibration must be in 1..{len(LARGE_SET) - 1}, got {n_calibration}")
    order = np.random.default_rng(seed).permutation(len(LARGE_SET))
    names = [LARGE_SET[i] for i in order]
    return sorted(names[:n_calibration]), sorted(names[n_calibration:])


@dataclasses.dataclass
class EvaluationSet:
    """Crops of the split photos: calibration crops only from calibration photos, evaluation
    crops only from evaluation photos; `sources[i]` is the photo of evaluation crop i."""

    calibration: np.ndarray          # uint8 [n_calibration, size, size, 3]
    evaluation: np.ndarray           # uint8 [n_evaluation_photos * crops_per_photo, size, size, 3]
    sources: List[str]
    calibration_photos: List[str]
    evaluation_photos: List[str]


def evaluation_set(n_calibration: int = 64, crops_per_photo: int = 6, size: int = DEFAULT_SIZE,
                   seed: int = 0, split_seed: int = SPLIT_SEED,
                   n_calibration_photos: int = N_CALIBRATION_PHOTOS) -> EvaluationSet:
    """The larger set's calibration and evaluation crops (see the module docstring): crops are
    drawn as in `draw_crop_specs` (seeded, photos in turn), `n_calibration` of them from the
    calibration photos and `crops_per_photo` from each evaluation photo. Needs the cache that
    scripts/fetch_photos.sh fills.

        >>> s = evaluation_set(64, 6, size=224)    # 64 calibration, 180 evaluation crops
    """
    size = _check_count("size", size)
    crops_per_photo = _check_count("crops_per_photo", crops_per_photo)
    if size < 1 or crops_per_photo < 1:
        raise ValueError("size and crops_per_photo must be >= 1")
    cal_names, eval_names = photo_split(split_seed, n_calibration_photos)
    photos = load_photos(cal_names + eval_names)
    shapes = {n: photos[n].shape[:2] for n in cal_names + eval_names}
    cal_specs = draw_crop_specs(_check_count("n_calibration", n_calibration),
                                {n: shapes[n] for n in cal_names}, seed=seed)
    eval_specs = draw_crop_specs(crops_per_photo * len(eval_names),
                                 {n: shapes[n] for n in eval_names}, seed=seed + 1)
    return EvaluationSet(render_crops(photos, cal_specs, size), render_crops(photos, eval_specs, size),
                         [s.photo for s in eval_specs], cal_names, eval_names)


@dataclasses.dataclass
class PhotoBootstrap:
    """Top-1 agreement and logit SQNR (dB) with percentile-bootstrap intervals over photos."""

    agreement: float
    agreement_ci: Tuple[float, float]
    sqnr_db: float
    sqnr_ci: Tuple[float, float]


def photo_bootstrap(reference: np.ndarray, test: np.ndarray, sources: Sequence[str],
                    level: float = 0.95, resamples: int = 4000, seed: int = 0) -> PhotoBootstrap:
    """Top-1 agreement of `test` with `reference` (logits [N, classes]) and SQNR over all logits,
    each with an interval from one bootstrap that resamples whole photos (`sources[i]` = photo of
    sample i): a resample's agreement is its hits / its crops, its SQNR the ratio of its summed
    signal and noise powers. The point figures are those of the full set.

        >>> b = photo_bootstrap(float_logits, int8_logits, s.sources)
        >>> b.agreement, b.agreement_ci, b.sqnr_db, b.sqnr_ci
    """
    reference = np.asarray(reference, np.float64)
    test = np.asarray(test, np.float64)
    groups = np.asarray(sources)
    if reference.ndim != 2 or reference.shape != test.shape or groups.shape != (len(reference),):
        raise ValueError(f"need logits [N, classes] of one shape and one source per sample: "
                         f"reference {reference.shape}, test {test.shape}, sources {groups.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    hits = np.argmax(reference, -1) == np.argmax(test, -1)
    signal = np.sum(reference ** 2, -1)
    noise = np.sum((reference - test) ** 2, -1)
    names, index = np.unique(groups, return_inverse=True)
    per = [np.bincount(index, weights=w, minlength=len(names))
           for w in (hits.astype(np.float64), np.ones(len(hits)), signal, noise)]
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    agree, count, sig, noi = (p[draws].sum(1) for p in per)
    with np.errstate(divide="ignore"):
        sqnrs = 10 * np.log10(sig / noi)
    tail = 100.0 * (1.0 - level) / 2.0
    a_lo, a_hi = np.percentile(agree / count, [tail, 100.0 - tail])
    s_lo, s_hi = np.percentile(sqnrs, [tail, 100.0 - tail])
    total_noise = noise.sum()
    sqnr = float("inf") if total_noise == 0 else float(10 * np.log10(signal.sum() / total_noise))
    return PhotoBootstrap(float(hits.mean()), (float(a_lo), float(a_hi)), sqnr,
                          (float(s_lo), float(s_hi)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`--check`: exit 0 when the larger set's cache is complete; `--import-from DIR`: fill it
    from extracted Debian packages (scripts/fetch_photos.sh does both)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data.photos")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true")
    group.add_argument("--import-from", metavar="DIR")
    args = parser.parse_args(argv)
    if args.check:
        missing = missing_cached_photos()
        if missing:
            print(f"{len(missing)} of {len(CACHED_PHOTOS)} photos missing in {photo_cache_dir()}",
                  file=sys.stderr)
            return 1
        print(f"{len(CACHED_PHOTOS)} photos cached in {photo_cache_dir()}")
        return 0
    written = import_cached_photos(args.import_from)
    print(f"{len(written)} photos written to {photo_cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
