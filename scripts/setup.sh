#!/usr/bin/env bash
# Installs everything tfquant, its tests and its benchmarks need, on a fresh machine.
# Idempotent: a second run only checks. Registries only: PyPI and Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e ".[test,bench]"
# ImageNet class names ship in timm's wheel; timm itself needs torch, so take the files only.
python -m pip install --quiet --disable-pip-version-check --no-deps "timm==1.0.31"

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup.sh: install Debian's dataset-fashion-mnist (or set TFQUANT_FASHION_MNIST_DIR)" >&2
  fi
fi

# The benchmark's larger photo set (OpenCV samples, KDE wallpapers) into the cache; never fails.
bash scripts/fetch_photos.sh
