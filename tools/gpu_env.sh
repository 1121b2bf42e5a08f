# Source this on the GPU machine, from the repository root, with .whl/ carried along:
#   . tools/gpu_env.sh
# It installs the prebuilt mamba_ssm and causal_conv1d wheels (no network there) into /tmp/site
# and puts them and this checkout on PYTHONPATH.
set -e
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
set +e
