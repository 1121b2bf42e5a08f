# A sweep on the GPU machine, in the background, from a copy outside the checkout (the device tool's
# per-call sync deletes files that are not in your working tree): copy, run, bring back.
#   . tools/gpu_env.sh; bash tools/gpu_sweep.sh start grids/fig10.yaml ... --engine python --batch --prefetch 50 --compile --workers 3
#   bash tools/gpu_sweep.sh wait 540     # in every call: wait (at most N s), then put runs.tgz, sweep.log and gpu_util.csv in $OUT
#   bash tools/gpu_sweep.sh stop
# MPS=1 on start runs the workers under CUDA MPS (one GPU shared at once, not in time slices), where the machine has it.
# `start` passes its arguments to `markov-laplace sweep` (GPU.md: the workers, the Dask cluster). FRESH=1 copies
# the checkout without runs/, so that every run trains again (to time a whole reproduction).
# Then, on your machine: python3 tools/collect_runs.py /work/.device/N/runs.tgz   (see GPU.md)
# The sweep is found by the process id written at start, never by matching command lines. runs.tgz holds only
# what changed since the last `wait` (runs finished since, at any depth under runs/; current checkpoints), under the tool's
# 16 MiB per file (and runs/timeline*.csv, a --timeline under runs/, beside it): regression runs (runs/icl/) come back without weights and checkpoints (git-ignored, too large).
set -u
W=${SWEEP_DIR:-/tmp}; REPO=$W/repo PID=$W/sweep.pid MARK=$W/sweep.mark LOG=$W/sweep.log UTIL=$W/gpu_util.csv
running() { [ -f "$PID" ] && kill -0 "$(cat "$PID")" 2>/dev/null; }
case "${1:-}" in
  start)
    shift
    if running; then echo "a sweep is already running"; exit 0; fi
    rm -rf "$REPO"; mkdir -p "$REPO"; touch "$MARK"
    tar c --exclude=./.git $([ "${FRESH:-0}" = 1 ] && echo --exclude=./runs) . | tar x -C "$REPO"; mkdir -p "$REPO/runs"
    [ -f .commit ] && export MARKOV_LAPLACE_COMMIT=$(cat .commit)  # the copy has no .git: the commit summaries record
    echo "start $(date -u +%FT%TZ) $*" >> $LOG
    if command -v nvidia-smi >/dev/null && ! { [ -f $W/util.pid ] && kill -0 "$(cat $W/util.pid)" 2>/dev/null; }; then
      # every GPU's utilisation (a kernel running) and memory every 5 s, for the timeline (90_bench draws it); `wait` brings it back
      echo "timestamp,index,utilization_gpu_pct,memory_used_mib" > $UTIL
      setsid nohup nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits -l 5 >> $UTIL 2>/dev/null < /dev/null &
      echo $! > $W/util.pid
    fi
    if [ "${MPS:-0}" = 1 ]; then  # CUDA MPS: the workers' kernels run on the GPU at once instead of in turns (time slices)
      export CUDA_MPS_PIPE_DIRECTORY=$W/mps-pipe CUDA_MPS_LOG_DIRECTORY=$W/mps-log; mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
      if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then echo "mps: daemon started" | tee -a $LOG
      else echo "mps: nvidia-cuda-mps-control is not here or did not start: the workers share the GPU by time slices" | tee -a $LOG; fi
    fi
    cd "$REPO"
    PYTHONPATH=/tmp/site:$REPO setsid nohup python3 -m markov_laplace sweep "$@" --root "$REPO/runs" >> $LOG 2>&1 < /dev/null &
    echo $! > "$PID"
    echo "started: $* (pid $(cat "$PID"))";;
  wait)
    if [ ! -f "$MARK" ]; then echo "no sweep was started on this machine (a fresh one?): run start again"; exit 1; fi
    t0=$(date +%s); limit=${2:-540}
    while [ $(( $(date +%s) - t0 )) -lt "$limit" ] && running; do sleep 5; done
    echo "$(date -u +%FT%TZ) running=$(running && echo yes || echo no)" >> $LOG
    cd "$REPO"; touch $MARK.next
    # at any depth: runs/<exp>/<run>/, runs/<scale>/<exp>/<run>/, runs/icl/<scale>/<exp>/<run>/; set-aside runs (.broken-*) left
    { find runs -mindepth 3 -name summary.json -newer "$MARK" -not -path '*/.broken-*' -printf '%h\n'
      find runs -mindepth 3 -name 'ckpt*' -not -path 'runs/icl/*' -not -path '*/.broken-*' -printf '%h/%f\n'
      find runs -mindepth 2 -name 'failures*.json' -newer "$MARK" -not -path '*/.broken-*'; } | sort -u > $W/sweep.list
    mv $MARK.next "$MARK"
    # regression weights and checkpoints (~40 MB a run, GBs a group) are git-ignored and over the 16 MiB per file: they stay
    tar czf "${OUT:-/tmp}/runs.tgz" --exclude=.lock --exclude='runs/icl/*/model.pt' --exclude='runs/icl/*/ckpt*' -T $W/sweep.list && cp $LOG "${OUT:-/tmp}/"
    cp runs/timeline*.csv "${OUT:-/tmp}/" 2>/dev/null   # the sweep's --timeline, when it was given one under runs/
    [ -f $UTIL ] && cp $UTIL "${OUT:-/tmp}/"              # the GPUs' utilisation since start (nvidia-smi, every 5 s)
    if [ "$(stat -c %s "${OUT:-/tmp}/runs.tgz")" -gt 15728640 ]; then  # over the tool's 16 MiB per file: parts of 15 MiB
      rm -f "${OUT:-/tmp}"/runs.tgz.part*; split -b 15M -d -a 1 "${OUT:-/tmp}/runs.tgz" "${OUT:-/tmp}/runs.tgz.part" && rm "${OUT:-/tmp}/runs.tgz"
      echo "runs.tgz in $(ls "${OUT:-/tmp}"/runs.tgz.part* | wc -l) parts (collect_runs.py reads them all)"
    fi
    echo "in runs.tgz: $(grep -c . $W/sweep.list) paths; sweep running: $(running && echo yes || echo no)";;
  stop)
    running && kill -INT -- -"$(cat "$PID")"; sleep 5; running && kill -- -"$(cat "$PID")"
    [ -f $W/util.pid ] && kill "$(cat $W/util.pid)" 2>/dev/null; rm -f $W/util.pid
    [ -d $W/mps-pipe ] && echo quit | CUDA_MPS_PIPE_DIRECTORY=$W/mps-pipe nvidia-cuda-mps-control 2>/dev/null
    echo "stop $(date -u +%FT%TZ)" >> $LOG;;
  *) echo "usage: bash tools/gpu_sweep.sh start GRID... [SWEEP FLAGS] | wait [SECONDS] | stop"; exit 2;;
esac
