# A wheel repacked smaller for the device tool's 64 MiB working tree: its contents as tar.xz (mamba_ssm: 18.6 MB as a
# wheel, 7.7 MB so). gpu_env.sh unpacks .whl/*.tar.xz into /tmp/site, as pip would install the wheel (no scripts there).
#   bash tools/xz_wheel.sh .whl/mamba_ssm-2.3.2.post1-cp312-cp312-linux_x86_64.whl   # writes .whl/mamba_ssm-2.3.2.post1-cp312.tar.xz
set -eu
whl=$1; name=$(basename "$whl" | cut -d- -f1-3); tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
unzip -q "$whl" -d "$tmp"
tar c -C "$tmp" . | xz -9e -T2 > "$(dirname "$whl")/$name.tar.xz.part" && mv "$(dirname "$whl")/$name.tar.xz.part" "$(dirname "$whl")/$name.tar.xz"
ls -la "$(dirname "$whl")/$name.tar.xz"
