# One device call of the regression grids (issue 21): train the runs --only selects, evaluate those that finished, pack
# the new small files into $OUT/icl_gpu.tgz. Everything but the environment is tools/icl_gpu_call.py (its --help).
#   bash tools/icl_gpu_call.sh grids/icl_main.yaml --only '*task=sparse_linear_preset=icl-transformer_*' --train-s 420 --eval-s 90
# Carry .whl (mamba_ssm, dask) and .commit (git rev-parse HEAD > .commit, here): the device copy's .git is stale.
# PYTHON (default python3) runs the tool: the CPU test sets it to this machine's virtual environment.
cd "$(dirname "$0")/.." || exit 2
. tools/gpu_env.sh
[ -f .commit ] && export MARKOV_LAPLACE_COMMIT=$(cat .commit)
exec "${PYTHON:-python3}" tools/icl_gpu_call.py "$@"
