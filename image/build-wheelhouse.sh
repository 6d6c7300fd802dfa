#!/usr/bin/env bash
# Build an offline wheelhouse for climbd: everything scripts/install.sh needs to install
# climbd with no network, for a given CPU architecture and Python version.
#
#   image/build-wheelhouse.sh [--arch aarch64|x86_64] [--python-version 3.11|3.13] OUT_DIR
#
# --python-version is the target's Python: 3.11 for Debian 12 / Raspberry Pi OS bookworm,
# 3.13 for Debian 13 / Raspberry Pi OS trixie (3.10 and 3.12 work too). The lock's markers
# pick the pose stack: mediapipe 0.10.18 up to 3.12, mediapipe 1.x on 3.13.
#
# Run it on a machine with internet access to PyPI (any architecture: wheels for the target
# are downloaded, not built). It needs uv (for `uv export --frozen` and `uv build`) and a
# pip running on Python of the *target* minor version (default python3.11), because the
# lock's environment markers (python_full_version >= '3.11', ...) are evaluated by pip with
# the interpreter it runs on. Packages published only as sdists (systemd-python) are put in
# as sdists and compiled in the target by install.sh; preparing their metadata here runs
# their setup.py, so the build machine needs pkg-config and libsystemd-dev as well.
#
# OUT_DIR gets:
#   requirements.txt      the lock, exported with hashes (`uv export --frozen`)
#   climbd-*.whl          the climbd wheel built from this tree
#   *.whl, *.tar.gz       every locked package for the target (pip --require-hashes)
#   setuptools, wheel     build tools for the sdists (not locked; build time only)
#   climbd_blazepose_full-*.whl  BlazePose Full as a Tasks API bundle (climbd.pose.bundle),
#                         for the "tasks" pose backend (the one on Python 3.13). It is
#                         written from mediapipe 0.10.18's model files with its metadata
#                         writer, so it is built with $BUNDLE_PYTHON (default: `uv run` in
#                         this tree, whose development environment is Python <= 3.12).
#   WHEELHOUSE.txt        what it was built for and from
set -euo pipefail

PROG=${0##*/}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=aarch64
PYVER=3.11
OUT=

die() { echo "$PROG: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=${2:?}; shift 2 ;;
        --python-version) PYVER=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        -*) echo "$PROG: unknown option $1" >&2; exit 2 ;;
        *) OUT=$1; shift ;;
    esac
done
[ -n "$OUT" ] || { echo "usage: $PROG [--arch aarch64|x86_64] [--python-version 3.11] OUT_DIR" >&2; exit 2; }
case $ARCH in aarch64|x86_64) ;; *) die "--arch must be aarch64 or x86_64" ;; esac
command -v uv >/dev/null || die "uv is required (https://docs.astral.sh/uv/)"
# pip on Python $PYVER: $HOST_PYTHON (default python$PYVER) if it has pip, else pip run by
# `uv tool run` on a Python $PYVER that uv finds or downloads.
HOST_PYTHON=${HOST_PYTHON:-python$PYVER}
PIP=()
if command -v "$HOST_PYTHON" >/dev/null \
        && [ "$("$HOST_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$PYVER" ] \
        && "$HOST_PYTHON" -m pip --version >/dev/null 2>&1; then
    PIP=("$HOST_PYTHON" -m pip)
else
    PIP=(uv tool run --python "$PYVER" --from pip pip)
    "${PIP[@]}" --version >/dev/null || die "no pip on Python $PYVER (set HOST_PYTHON)"
fi
got=$("${PIP[@]}" --version | sed -n 's/.*(python \([0-9.]*\)).*/\1/p')
[ "$got" = "$PYVER" ] || die "pip runs on Python $got, the target is $PYVER"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

echo "$PROG: exporting the lock"
(cd "$REPO" && uv export --frozen --no-dev --no-emit-project --extra systemd --extra gpio \
    --format requirements-txt --output-file "$OUT/requirements.txt" >/dev/null)

echo "$PROG: building the climbd wheel"
rm -f "$OUT"/climbd-*.whl
(cd "$REPO" && uv build --wheel --out-dir "$OUT" >/dev/null)

# manylinux tags the target's glibc accepts, newest first: 2.36 on bookworm (Python 3.11),
# 2.41 on trixie (Python 3.13).
GLIBC_MINOR=36
case $PYVER in 3.13) GLIBC_MINOR=41 ;; esac
platforms=()
for minor in $(seq "$GLIBC_MINOR" -1 17); do platforms+=(--platform "manylinux_2_${minor}_${ARCH}"); done
platforms+=(--platform "manylinux2014_${ARCH}" --platform "linux_${ARCH}")
cpver=cp${PYVER/./}

echo "$PROG: downloading locked packages for $ARCH / CPython $PYVER"
"${PIP[@]}" download --disable-pip-version-check --quiet --no-deps --require-hashes \
    --dest "$OUT" --python-version "$PYVER" --implementation cp \
    --abi "$cpver" --abi abi3 --abi none "${platforms[@]}" \
    --requirement "$OUT/requirements.txt"

echo "$PROG: downloading build tools for sdists"
"${PIP[@]}" download --disable-pip-version-check --quiet --no-deps \
    --only-binary=:all: --dest "$OUT" setuptools wheel

echo "$PROG: building the BlazePose Full model bundle (climbd_blazepose_full)"
rm -f "$OUT"/climbd_blazepose_full-*.whl
if [ -n "${BUNDLE_PYTHON:-}" ]; then
    (cd "$REPO" && PYTHONPATH=$REPO "$BUNDLE_PYTHON" -m climbd.pose.bundle "$OUT" >/dev/null)
else
    (cd "$REPO" && env -u VIRTUAL_ENV uv run --frozen python -m climbd.pose.bundle "$OUT" >/dev/null)
fi || die "building the model bundle failed (needs mediapipe 0.10.18: set BUNDLE_PYTHON)"

cat > "$OUT/WHEELHOUSE.txt" <<EOF
climbd wheelhouse
arch: $ARCH
python: $PYVER
source: $REPO ($(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo "no git"))
uv.lock sha256: $(sha256sum "$REPO/uv.lock" | cut -d' ' -f1)
built: $(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
echo "$PROG: wheelhouse ready in $OUT ($(find "$OUT" -maxdepth 1 -type f | wc -l) files," \
    "$(du -sh "$OUT" | cut -f1))"
