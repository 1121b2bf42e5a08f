"""tools/inductor_cache.sh packs torch.compile's kernel cache on the GPU machine for the next session, and tools/gpu_env.sh
unpacks a carried archive and points inductor at it (issue 20: compilation per shape). Run here in a scratch checkout."""
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checkout(tmp_path): # a scratch root with the two scripts where they live
    (tmp_path / 'tools').mkdir(parents=True)
    for name in ('inductor_cache.sh', 'gpu_env.sh'): shutil.copy(ROOT / 'tools' / name, tmp_path / 'tools' / name)
    return tmp_path


def _pack(root, out, **env):
    return subprocess.run(['bash', str(root / 'tools' / 'inductor_cache.sh'), 'pack'], capture_output=True, text=True,
                          env={**os.environ, 'OUT': str(out), **env})


def test_pack_then_unpack_gives_the_same_cache(tmp_path):
    root, out = _checkout(tmp_path / 'a'), tmp_path / 'out'
    out.mkdir()
    r = _pack(root, out)
    assert r.returncode == 0 and 'nothing compiled' in r.stdout and not list(out.iterdir())
    files = {'fxgraph/ab/entry': b'graph', 'triton/0/k/kernel.cubin': bytes(range(256)) * 40}
    for name, data in files.items():
        (root / '.inductor_cache' / name).parent.mkdir(parents=True, exist_ok=True)
        (root / '.inductor_cache' / name).write_bytes(data)
    r = _pack(root, out)
    assert r.returncode == 0 and [p.name for p in out.iterdir()] == ["inductor_cache.tar.xz"], r.stdout  # nothing else left in $OUT
    # the next session: a fresh checkout with the archive carried; sourcing gpu_env.sh unpacks it and points inductor there
    fresh = _checkout(tmp_path / 'b')
    shutil.copy(out / 'inductor_cache.tar.xz', fresh / '.inductor_cache.tar.xz')
    r = subprocess.run(['bash', '-c', '. tools/gpu_env.sh >/dev/null 2>&1; echo "$TORCHINDUCTOR_CACHE_DIR"'], cwd=fresh,
                       capture_output=True, text=True)
    assert r.stdout.strip() == str(fresh / '.inductor_cache')
    assert {n: (fresh / '.inductor_cache' / n).read_bytes() for n in files} == files


def test_an_archive_over_the_limit_is_not_written(tmp_path):
    root, out = _checkout(tmp_path / 'a'), tmp_path / 'out'
    out.mkdir()
    (root / '.inductor_cache').mkdir()
    (root / '.inductor_cache' / 'big').write_bytes(os.urandom(3 << 20))  # 3 MiB that do not compress, against a 1-MiB limit
    r = _pack(root, out, INDUCTOR_CACHE_MAX_MIB='1')
    assert r.returncode == 0 and 'not written' in r.stdout and not list(out.iterdir())


def test_a_large_archive_comes_back_in_parts_that_join_into_it(tmp_path):
    root, out = _checkout(tmp_path / 'a'), tmp_path / 'out'
    out.mkdir()
    (root / '.inductor_cache').mkdir()
    data = os.urandom(3 << 20)  # 3 MiB that do not compress, with tar's headers: four parts of at most 1 MiB, under an 8-MiB limit
    (root / '.inductor_cache' / 'big').write_bytes(data)
    r = _pack(root, out, INDUCTOR_CACHE_PART_MIB='1', INDUCTOR_CACHE_MAX_MIB='8')
    parts = sorted(out.iterdir())
    assert r.returncode == 0 and '4 parts' in r.stdout and [p.name for p in parts] == [f'inductor_cache.tar.xz.part{i}' for i in range(4)], r.stdout
    assert all(p.stat().st_size <= 1 << 20 for p in parts)
    fresh = _checkout(tmp_path / 'b')  # here: cat the parts (the glob's order) into the archive the next session carries
    subprocess.run(f'cat {out}/inductor_cache.tar.xz* > {fresh}/.inductor_cache.tar.xz', shell=True, check=True)
    subprocess.run(['bash', '-c', '. tools/gpu_env.sh >/dev/null 2>&1'], cwd=fresh, check=True)
    assert (fresh / '.inductor_cache' / 'big').read_bytes() == data


def test_more_than_ten_parts_is_refused_before_packing(tmp_path):
    root, out = _checkout(tmp_path / 'a'), tmp_path / 'out'
    out.mkdir(); (root / '.inductor_cache').mkdir()
    r = _pack(root, out, INDUCTOR_CACHE_PART_MIB='1', INDUCTOR_CACHE_MAX_MIB='11')
    assert r.returncode == 2 and 'at most 10 parts' in r.stdout and not list(out.iterdir())
