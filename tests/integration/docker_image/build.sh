#!/usr/bin/env bash
# Builds the test image pytest-autotuner-sim:test (no registry needed): a tiny root filesystem holding only an
# `sglang.launch_server` shim that execs `python3 -m pytest_autotuner.sim` (and answers `--help` with SGLang 0.5.23's
# real help text, copied from tests/data). Python, its libraries and the work
# tree are not copied: the tests bind-mount the host's /usr, Python prefix and work tree read-only (see
# tests/integration/test_docker_runtime.py), so the image stays a few hundred KiB and builds in about a second.
#
#   usage: build.sh [TAG] [PYTHON]     (defaults: pytest-autotuner-sim:test, python3; .ci/start-docker runs it)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tag="${1:-pytest-autotuner-sim:test}"
python="${2:-python3}"
prefix="$("$python" -c 'import sys; print(sys.prefix)')"
base_prefix="$("$python" -c 'import sys; print(sys.base_prefix)')"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{usr,etc,root,sbin,tmp,model,opt/shim,proc,sys,dev,run,var/tmp}
chmod 1777 "$root/tmp" "$root/var/tmp"
# merged /usr (the host's /usr is mounted over it); /sbin stays a real directory: the engine mounts docker-init there
for d in bin lib lib64; do ln -s "usr/$d" "$root/$d"; done
mkdir -p "$root$prefix" "$root$base_prefix"
cp -r "$here/sglang" "$root/opt/shim/"
cp "$here/../../data/sglang-0.5.23/launch_server-help.txt" "$root/opt/shim/sglang/"
find "$root/opt/shim" -name __pycache__ -prune -exec rm -rf {} +
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"

tar -C "$root" -cf "$root.tar" .
docker import \
  --change "ENV PATH=$prefix/bin:$base_prefix/bin:/usr/local/bin:/usr/bin:/bin" \
  --change "ENV PYTHONPATH=/opt/shim" \
  --change "ENV PYTHONDONTWRITEBYTECODE=1" \
  --change "LABEL pytest-autotuner.test-image.python-prefix=$prefix" \
  --change "LABEL pytest-autotuner.test-image.python-base-prefix=$base_prefix" \
  --change "LABEL pytest-autotuner.test-image.hash=${IMAGE_HASH:-none}" \
  --change "WORKDIR /" \
  --change 'CMD ["python3", "-m", "sglang.launch_server", "--help"]' \
  "$root.tar" "$tag" >/dev/null
rm -f "$root.tar"
echo "built $tag (python prefix $prefix)"
