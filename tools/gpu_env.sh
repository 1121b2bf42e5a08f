# Source this on the GPU machine, from the repository root, with .whl/ carried along:
#   . tools/gpu_env.sh
# It installs the prebuilt wheels (no network there) into /tmp/site: mamba_ssm and causal_conv1d from .whl/ (as wheels,
# or as .tar.xz from tools/xz_wheel.sh, small enough to carry beside the tree),
# dask[distributed] and its dependencies from .whl/dask/ (tools/dask_wheels.sh), and puts them and this
# checkout on PYTHONPATH.
# A wheel that does not install here (another Python: the wheels are built for the GPU image's CPython 3.12) is said
# in one line and left out; the shell that sources this goes on.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null ||
    echo "gpu_env: the wheels in .whl/ do not install on this Python ($(python3 -V)); going on without them"
fi
for x in .whl/*.tar.xz; do  # a wheel's contents repacked smaller (tools/xz_wheel.sh): unpacked as pip would install it
  [ -f "$x" ] && { mkdir -p /tmp/site; tar xJf "$x" -C /tmp/site || echo "gpu_env: $x does not unpack"; }
done
if ls .whl/dask/*.whl >/dev/null 2>&1 && ! PYTHONPATH=/tmp/site python3 -c 'import distributed' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/dask/*.whl 2>/dev/null ||
    echo "gpu_env: the wheels in .whl/dask/ do not install on this Python ($(python3 -V)); going on without them"
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c 'import distributed' 2>/dev/null || echo "gpu_env: dask.distributed does not import: run tools/dask_wheels.sh here and carry .whl (sweeps with --workers/--scheduler need it)"
export PYTHONUNBUFFERED=1
# torch.compile's kernels: inductor's cache in the checkout, an ignored path, so the calls of one held machine share it;
# unpacked from .inductor_cache.tar.xz where an earlier session's was brought back and carried (tools/inductor_cache.sh)
export TORCHINDUCTOR_CACHE_DIR=$PWD/.inductor_cache
if [ -f .inductor_cache.tar.xz ] && [ ! -d .inductor_cache ]; then
  tar xJf .inductor_cache.tar.xz || { echo "gpu_env: .inductor_cache.tar.xz does not unpack; compiling from scratch"; rm -rf .inductor_cache; }
fi
