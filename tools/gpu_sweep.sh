# The paper-scale sweep on the GPU machine, in the background, from a copy outside the checkout
# (the device tool's per-call sync deletes files that are not in your working tree).
#   . tools/gpu_env.sh; bash tools/gpu_sweep.sh start grids/fig10.yaml [more grids] [-- extra sweep flags]
#   bash tools/gpu_sweep.sh wait 540     # in every call: wait (at most N s), then put runs.tgz and sweep.log in $OUT
#   bash tools/gpu_sweep.sh stop
# WORKERS=N (default 2) sets the worker processes; FRESH=1 deletes the grids' experiments from the copy
# first, so that every run trains again (to time a whole reproduction; the checkout's runs/ stays).
# The step is compiled (--compile: 1.7-2.8x faster per step on an H100, GPU.md).
# Then, on your machine: python3 tools/collect_runs.py /work/.device/N/runs.tgz   (see GPU.md)
#
# The sweep is found by the process id written at start, never by matching command lines: a
# pattern would also match the device tool's own shell, whose command line names it.
# runs.tgz holds only what changed since the last `wait` (runs finished since, and the current
# checkpoints of unfinished ones), so that it stays under the tool's 16 MiB per file.
set -u
REPO=/tmp/repo PID=/tmp/sweep.pid MARK=/tmp/sweep.mark
running() { [ -f "$PID" ] && kill -0 "$(cat "$PID")" 2>/dev/null; }
case "${1:-}" in
  start)
    shift
    if running; then echo "a sweep is already running"; exit 0; fi
    rm -rf "$REPO"; cp -r . "$REPO"; touch "$MARK"
    if [ "${FRESH:-0}" = 1 ]; then
      for g in "$@"; do [ -f "$g" ] && rm -rf "$REPO/runs/$(sed -n 's/^experiment: *//p' "$g")"; done
    fi
    # the device copy's .git is not your HEAD: write it beforehand (git rev-parse HEAD > .commit) to record it in summaries
    [ -f .commit ] && export MARKOV_LAPLACE_COMMIT=$(cat .commit)
    echo "start $(date -u +%FT%TZ) $*" >> /tmp/sweep.log
    cd "$REPO"
    PYTHONPATH=/tmp/site:$REPO setsid nohup python3 -m markov_laplace sweep "$@" --root "$REPO/runs" --engine python --batch --prefetch 50 --workers ${WORKERS:-2} --gpus 1 --compile >> /tmp/sweep.log 2>&1 < /dev/null &
    echo $! > "$PID"
    echo "started: $* (pid $(cat "$PID"))";;
  wait)
    if [ ! -f "$MARK" ]; then echo "no sweep was started on this machine (a fresh one?): run start again"; exit 1; fi
    t0=$(date +%s); limit=${2:-540}
    while [ $(( $(date +%s) - t0 )) -lt "$limit" ] && running; do sleep 5; done
    echo "$(date -u +%FT%TZ) running=$(running && echo yes || echo no)" >> /tmp/sweep.log
    cd "$REPO"; touch /tmp/sweep.mark.next
    { find runs -mindepth 3 -maxdepth 3 -name summary.json -newer "$MARK" -printf '%h\n'
      find runs -mindepth 3 -maxdepth 3 -name 'ckpt*' -printf '%h/%f\n'; } | sort -u > /tmp/sweep.list
    mv /tmp/sweep.mark.next "$MARK"
    tar czf "${OUT:-/tmp}/runs.tgz" -T /tmp/sweep.list && cp /tmp/sweep.log "${OUT:-/tmp}/"
    echo "in runs.tgz: $(grep -c . /tmp/sweep.list) paths; finished runs in the copy: $(ls runs/*/*/summary.json 2>/dev/null | wc -l); sweep running: $(running && echo yes || echo no)";;
  stop)
    running && kill -- -"$(cat "$PID")"; echo "stop $(date -u +%FT%TZ)" >> /tmp/sweep.log;;
  *) echo "usage: bash tools/gpu_sweep.sh start GRID... | wait [SECONDS] | stop"; exit 2;;
esac
