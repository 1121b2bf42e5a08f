# Bring torch.compile's kernels from one GPU session to the next (issue 20: compilation is 74-130 s per shape there,
# paid again by every fresh machine). tools/gpu_env.sh points inductor's cache at .inductor_cache/ in the checkout.
#   on the GPU machine, at the end of a call:  bash tools/inductor_cache.sh pack     # -> $OUT/inductor_cache.tar.xz(.partN)
#   here, after the call:                      cat /work/.device/N/inductor_cache.tar.xz* > .inductor_cache.tar.xz
#   the next session's calls:                  carry .inductor_cache.tar.xz beside .whl and .commit
# Inductor keys each entry by the traced graph, torch's version and the device, so a changed model compiles anew and a
# stale entry is never used; the archive holds only what this project's own compiled steps wrote.
# A file back from $OUT is at most 16 MiB: a larger archive is split into parts of 15 MiB (.part0, .part1, ...), and one
# over INDUCTOR_CACHE_MAX_MIB (32: what a call may carry beside the checkout and .whl, 64 MiB in all) is not written.
set -u
cd "$(dirname "$0")/.." || exit 2
case "${1:-}" in
  pack)
    [ -d .inductor_cache ] || { echo "inductor_cache: no .inductor_cache here: nothing compiled"; exit 0; }
    out=${OUT:?inductor_cache: OUT is not set (the device tool sets it)}/inductor_cache.tar.xz
    max=${INDUCTOR_CACHE_MAX_MIB:-32}  # MiB in all
    part=${INDUCTOR_CACHE_PART_MIB:-15}  # MiB: under the device tool's 16 MiB a file from $OUT may be
    [ "$max" -le $((10 * part)) ] || { echo "inductor_cache: at most 10 parts: INDUCTOR_CACHE_MAX_MIB ($max) must be <= 10 x INDUCTOR_CACHE_PART_MIB ($part)"; exit 2; }
    tmp=$(mktemp) || exit 1  # outside $OUT: a call cut short leaves nothing there that `cat inductor_cache.tar.xz*` would join
    trap 'rm -f "$tmp"' EXIT
    XZ_OPT=-T0 tar cJf "$tmp" .inductor_cache || exit 1
    size=$(stat -c %s "$tmp")
    if [ "$size" -gt $((max * 1024 * 1024)) ]; then
      echo "inductor_cache: $((size / 1048576)) MiB packed, over the $max MiB a call may carry; not written"
    elif [ "$size" -gt $((part * 1024 * 1024)) ]; then
      split -b "${part}M" -d -a 1 "$tmp" "$out.part" || { rm -f "$out".part?; exit 1; }
      echo "inductor_cache: $(du -sh .inductor_cache | cut -f1) of kernels packed into $((size / 1024)) KiB in $(ls "$out".part? | wc -l) parts: $out.part*"
    else
      cp "$tmp" "$out" || { rm -f "$out"; exit 1; }
      echo "inductor_cache: $(du -sh .inductor_cache | cut -f1) of kernels packed into $((size / 1024)) KiB: $out"
    fi ;;
  *) echo "usage: bash tools/inductor_cache.sh pack   (on the GPU machine, at the end of a call)"; exit 2 ;;
esac
