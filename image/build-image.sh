#!/usr/bin/env bash
# Build the climbd Raspberry Pi OS (trixie, arm64) image with pi-gen.
#
#   image/build-image.sh PI_GEN_DIR [--wheelhouse DIR] [--docker] [--stage-only]
#
# PI_GEN_DIR is a checkout of https://github.com/RPi-Distro/pi-gen, branch "arm64"
# (64-bit images). This script
#   1. builds the aarch64 wheelhouse for the Python of the config's RELEASE (trixie: 3.13,
#      bookworm: 3.11) with image/build-wheelhouse.sh, unless --wheelhouse gives one (built
#      beforehand, e.g. on a machine with internet);
#   2. copies image/pi-gen/stage-climbd into PI_GEN_DIR, with the payload the stage installs
#      (scripts/install.sh, systemd/, config/, the wheelhouse) in 00-climbd/files/climbd;
#   3. copies image/pi-gen/config to PI_GEN_DIR/config unless one is there, and checks that
#      FIRST_USER_PASS is set; marks stage2 SKIP_IMAGES (only the climbd image is exported);
#   4. runs pi-gen's ./build.sh (needs root and its host dependencies, see its README) or
#      ./build-docker.sh with --docker. --stage-only stops after step 3.
# The result is PI_GEN_DIR/deploy/*-climbd-climbd.img.xz.
set -euo pipefail

PROG=${0##*/}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIGEN=
WHEELHOUSE=
DOCKER=0
STAGE_ONLY=0

die() { echo "$PROG: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --wheelhouse) WHEELHOUSE=${2:?}; shift 2 ;;
        --docker) DOCKER=1; shift ;;
        --stage-only) STAGE_ONLY=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "$PROG: unknown option $1" >&2; exit 2 ;;
        *) PIGEN=$1; shift ;;
    esac
done
[ -n "$PIGEN" ] || { echo "usage: $PROG PI_GEN_DIR [--wheelhouse DIR] [--docker] [--stage-only]" >&2; exit 2; }
if [ ! -x "$PIGEN/build.sh" ] || [ ! -d "$PIGEN/stage2" ]; then
    die "$PIGEN is not a pi-gen checkout"
fi
PIGEN=$(cd "$PIGEN" && pwd)

CONFIG_SRC=$PIGEN/config
[ -f "$CONFIG_SRC" ] || CONFIG_SRC=$REPO/image/pi-gen/config
# shellcheck disable=SC1090
RELEASE=$(. "$CONFIG_SRC"; echo "${RELEASE:-trixie}")
case $RELEASE in
    trixie) PYVER=3.13 ;;
    bookworm) PYVER=3.11 ;;
    *) die "RELEASE=$RELEASE in $CONFIG_SRC: climbd images are built from trixie or bookworm" ;;
esac
if [ -z "$WHEELHOUSE" ]; then
    WHEELHOUSE=$REPO/image/wheelhouse-aarch64-py$PYVER
    "$REPO/image/build-wheelhouse.sh" --arch aarch64 --python-version "$PYVER" "$WHEELHOUSE"
fi
[ -f "$WHEELHOUSE/requirements.txt" ] || die "$WHEELHOUSE is not a wheelhouse (no requirements.txt)"
grep -q '^arch: aarch64' "$WHEELHOUSE/WHEELHOUSE.txt" 2>/dev/null \
    || die "$WHEELHOUSE was not built for aarch64 (see its WHEELHOUSE.txt)"
grep -q "^python: $PYVER\$" "$WHEELHOUSE/WHEELHOUSE.txt" 2>/dev/null \
    || die "$WHEELHOUSE was not built for Python $PYVER ($RELEASE; see its WHEELHOUSE.txt)"

STAGE=$PIGEN/stage-climbd
rm -rf "$STAGE"
cp -a "$REPO/image/pi-gen/stage-climbd" "$STAGE"
PAYLOAD=$STAGE/00-climbd/files/climbd
mkdir -p "$PAYLOAD/scripts"
cp -a "$REPO/scripts/install.sh" "$PAYLOAD/scripts/"
cp -a "$REPO/systemd" "$REPO/config" "$PAYLOAD/"
cp -a "$WHEELHOUSE" "$PAYLOAD/wheelhouse"

if [ ! -f "$PIGEN/config" ]; then
    cp "$REPO/image/pi-gen/config" "$PIGEN/config"
    echo "$PROG: wrote $PIGEN/config; set FIRST_USER_PASS in it"
fi
# shellcheck disable=SC1091
FIRST_USER_PASS=$(. "$PIGEN/config"; echo "${FIRST_USER_PASS:-}")
[ -n "$FIRST_USER_PASS" ] || die "set FIRST_USER_PASS in $PIGEN/config (the admin account)"
grep -q 'stage-climbd' "$PIGEN/config" || die "$PIGEN/config: STAGE_LIST must end with stage-climbd"
touch "$PIGEN/stage2/SKIP_IMAGES"

echo "$PROG: pi-gen staged in $PIGEN (stage-climbd, $(du -sh "$PAYLOAD" | cut -f1) payload)"
[ "$STAGE_ONLY" = 0 ] || exit 0
cd "$PIGEN"
if [ "$DOCKER" = 1 ]; then
    ./build-docker.sh
else
    [ "$(id -u)" -eq 0 ] || die "pi-gen's build.sh must run as root (or use --docker)"
    ./build.sh
fi
