# The paper-scale sweep on the GPU machine, in the background, from a copy outside the checkout
# (the device tool's per-call sync deletes files that are not in your working tree).
#   . tools/gpu_env.sh; bash tools/gpu_sweep.sh start grids/fig10.yaml [more grids] [-- extra sweep flags]
#   bash tools/gpu_sweep.sh wait 540     # in every call: wait (at most N s), then put runs.tgz and sweep.log in $OUT
#   bash tools/gpu_sweep.sh stop
# Then, on your machine: python3 tools/collect_runs.py /work/.device/N/runs.tgz   (see GPU.md)
set -u
REPO=/tmp/repo
running() { pgrep -f "main(sys.argv" >/dev/null; }
case "${1:-}" in
  start)
    shift
    if running; then echo "a sweep is already running"; exit 0; fi
    rm -rf "$REPO"; cp -r . "$REPO"
    # the device copy's .git is not your HEAD: write it beforehand (git rev-parse HEAD > .commit) to record it in summaries
    [ -f .commit ] && export MARKOV_LAPLACE_COMMIT=$(cat .commit)
    echo "start $(date -u +%FT%TZ) $*" >> /tmp/sweep.log
    (cd "$REPO" && PYTHONPATH=/tmp/site:$REPO setsid nohup python3 -c \
      "import sys; from markov_laplace.cli import main; sys.exit(main(sys.argv[1:]))" \
      sweep "$@" --engine python --batch runs --prefetch 50 --workers 2 --gpus 1 >> /tmp/sweep.log 2>&1 < /dev/null &)
    echo "started: $*";;
  wait)
    t0=$(date +%s); limit=${2:-540}
    while [ $(( $(date +%s) - t0 )) -lt "$limit" ] && running; do sleep 5; done
    echo "$(date -u +%FT%TZ) running=$(running && echo yes || echo no)" >> /tmp/sweep.log
    tar czf "${OUT:-/tmp}/runs.tgz" -C "$REPO" runs && cp /tmp/sweep.log "${OUT:-/tmp}/"
    echo "finished runs in the copy: $(ls "$REPO"/runs/*/*/summary.json 2>/dev/null | wc -l); sweep running: $(running && echo yes || echo no)";;
  stop)
    pkill -f "main(sys.argv"; echo "stop $(date -u +%FT%TZ)" >> /tmp/sweep.log;;
  *) echo "usage: bash tools/gpu_sweep.sh start GRID... | wait [SECONDS] | stop"; exit 2;;
esac
