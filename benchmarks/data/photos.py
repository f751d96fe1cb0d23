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
"""
from __future__ import annotations

import importlib.util
import os
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


class PhotosNotFound(FileNotFoundError):
    """A photo's wheel (scikit-image or scikit-learn) is not installed."""


class CropSpec(NamedTuple):
    photo: str
    x0: int
    y0: int
    side: int
    flip: bool


def photo_path(name: str) -> str:
    """Absolute path of photo `name` inside its installed wheel (the package is not imported)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; known: {', '.join(PHOTOS)}")
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
        if im.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
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
