#!/usr/bin/env bash
# Build what deploy/aws/template.yaml deploys, from PyPI wheels only:
#   .build/function/  MPR core + mpr-storage-s3 + mpr-lambda + the libraries the handlers import
#                     (av, ffmpeg-python, pluggy; boto3 comes with the Lambda runtime)
#   .build/layer/bin/ffmpeg  a static ffmpeg (x86_64) taken from the imageio-ffmpeg wheel
# Then: sam deploy --guided   (see README, "AWS")
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
BUILD="$HERE/.build"

rm -rf "$BUILD"
mkdir -p "$BUILD/function" "$BUILD/layer/bin" "$BUILD/wheels"

# Libraries for Lambda's Python 3.12 on x86_64 (binary wheels for Amazon Linux 2023).
"$PIP" install --quiet --target "$BUILD/function" --platform manylinux2014_x86_64 \
  --python-version 3.12 --implementation cp --only-binary=:all: av ffmpeg-python future pluggy
# MPR itself: pure Python, without its server dependencies (Litestar, Tortoise, ...).
"$PIP" install --quiet --target "$BUILD/function" --no-deps \
  "$ROOT" "$ROOT/plugins/mpr_storage_s3" "$ROOT/plugins/mpr_lambda"

# ffmpeg for the layer: imageio-ffmpeg ships a static Linux build inside its wheel.
"$PIP" download --quiet --dest "$BUILD/wheels" --no-deps --only-binary=:all: \
  --platform manylinux2010_x86_64 --python-version 3.12 imageio-ffmpeg
python3 - "$BUILD" <<'PY'
import pathlib, stat, sys, zipfile
build = pathlib.Path(sys.argv[1])
wheel = next((build / "wheels").glob("imageio_ffmpeg-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if "/binaries/ffmpeg-linux" in n)
    target = build / "layer" / "bin" / "ffmpeg"
    target.write_bytes(z.read(name))
target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
print(f"layer: {target} from {wheel.name}")
PY
rm -rf "$BUILD/wheels"
# setuptools leaves in-tree build/ directories behind when pip builds the local packages
rm -rf "$ROOT/build" "$ROOT/plugins/mpr_storage_s3/build" "$ROOT/plugins/mpr_lambda/build"
du -sh "$BUILD/function" "$BUILD/layer"
