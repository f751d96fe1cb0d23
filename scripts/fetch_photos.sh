#!/usr/bin/env bash
# Fetches the benchmark's larger photo set (benchmarks/data/photos.py, CACHED_PHOTOS) once:
# `apt-get download opencv-doc plasma-workspace-wallpapers` (no install, no dependencies),
# `dpkg-deb -x` into a temporary folder, and the chosen photos copied (downscaled, as PNG) into
# ${TFQUANT_CACHE:-~/.cache/tfquant}/photos_v1. Idempotent: does nothing when the cache is
# complete. Never fails: without apt-get (or a network) it prints a note and exits 0, and the
# benchmarks that need the photos then say to run this script.
set -uo pipefail
cd "$(dirname "$0")/.."

if python -m benchmarks.data.photos --check 2>/dev/null; then
  exit 0
fi
note() { echo "fetch_photos.sh: $1; the larger photo set is not cached (benchmarks.suite_generalization needs it; rerun scripts/fetch_photos.sh later)." >&2; exit 0; }
command -v apt-get >/dev/null 2>&1 || note "apt-get not found"
command -v dpkg-deb >/dev/null 2>&1 || note "dpkg-deb not found"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"   # apt's _apt user writes the download there
download() { (cd "$work" && apt-get download -qq opencv-doc plasma-workspace-wallpapers >/dev/null 2>&1); }
if ! download; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  download || note "apt-get download opencv-doc plasma-workspace-wallpapers failed"
fi
for deb in "$work"/*.deb; do
  dpkg-deb -x "$deb" "$work/root" || note "dpkg-deb -x $deb failed"
done
python -m benchmarks.data.photos --import-from "$work/root" || note "importing the photos failed"
