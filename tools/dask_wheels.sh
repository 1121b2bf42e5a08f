#!/usr/bin/env bash
# The wheels of dask[distributed] and its dependencies for the GPU image (CPython 3.12, x86-64, no network there),
# into .whl/dask/ (git-ignored; carry .whl with every device call). tools/gpu_env.sh installs them when present.
#   bash tools/dask_wheels.sh            # about 4 MB
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SPEC=$(sed -n 's/^requirements = .*\(dask\[distributed\][^ ]*\).*/\1/p' settings.ini)   # the range the package pins
rm -rf .whl/dask && mkdir -p .whl/dask
"$PY" -m pip download -q --disable-pip-version-check "${SPEC:-dask[distributed]}" -d .whl/dask \
  --python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux2014_x86_64
# what the image has already (torch needs jinja2, markupsafe and fsspec; transformers pyyaml and packaging): leave them out
rm -f .whl/dask/{jinja2,markupsafe,fsspec,pyyaml,packaging}-*.whl
ls .whl/dask
echo "$(ls .whl/dask/*.whl | wc -l) wheels, $(du -sh .whl/dask | cut -f1) in .whl/dask"
