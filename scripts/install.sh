#!/usr/bin/env bash
# Install climbd on an existing Debian / Raspberry Pi OS / Ubuntu (Jetson) system, or into a
# root file system (--root DIR: an image being built, a chroot, a mounted SD card).
#
#   sudo scripts/install.sh                                # from this source tree, online
#   sudo scripts/install.sh --wheelhouse /media/usb/wh     # offline, from a wheelhouse
#   sudo scripts/install.sh --root /mnt/rootfs --wheelhouse wh --no-start
#
# What it does (idempotent; run it again to upgrade):
#   1. groups "video" and "gpio" (created if missing) and the system user "climbd"
#      (home /var/lib/climbd, no login shell, member of video and gpio);
#   2. a new virtual environment /opt/climbd/releases/<version>-<UTC time> with the locked
#      dependencies (requirements from `uv export --frozen`, installed with --no-deps and
#      --require-hashes: exactly the lock, nothing resolved at install time) and the climbd
#      wheel; the existing config is validated with the new release before switching;
#   3. /opt/climbd/venv -> that release (an atomic symlink switch; the previous release
#      stays for rollback: `ln -sfn /opt/climbd/releases/<old> /opt/climbd/venv`);
#   4. /etc/climbd/climbd.toml from config/climbd.toml, never overwriting an existing one
#      (the new default is put next to it as climbd.toml.dist);
#   5. /etc/systemd/system/climbd.service and /etc/udev/rules.d/60-climbd-gpio.rules;
#   6. `systemctl enable climbd.service` (with --root: `systemctl --root=DIR enable`, which
#      needs no running systemd; without systemctl the wants/ symlink is made directly);
#      on a live system with systemd running it also reloads units and (re)starts climbd.
#
# A wheelhouse (image/build-wheelhouse.sh) holds climbd-*.whl, requirements.txt and every
# wheel (sdists for packages without wheels, e.g. systemd-python, which are then built in the
# target: it needs gcc, pkg-config, python3-dev and libsystemd-dev there), plus the
# BlazePose model bundle climbd_blazepose_full-*.whl.
#
# The target's Python picks the pose stack through the lock's markers: 3.10-3.12 (Debian 12 /
# Raspberry Pi OS bookworm: 3.11) get mediapipe 0.10.18 and its mp.solutions graph; 3.13
# (Debian 13 / Raspberry Pi OS trixie) gets mediapipe 1.x, whose Tasks API runs the same
# model from climbd_blazepose_full (installed whenever the wheelhouse has it; required on
# 3.13: without a wheelhouse it is built here with `python -m climbd.pose.bundle` in the
# source tree's development environment).
#
# Exit status: 0 installed, 1 failed, 2 bad usage.
set -euo pipefail

PROG=${0##*/}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=/
SOURCE=$(cd "$SCRIPT_DIR/.." && pwd)
WHEEL=
REQUIREMENTS=
WHEELHOUSE=
CONFIG=
PYTHON=/usr/bin/python3
ENABLE=1
START=auto
KEEP_RELEASES=2
COMPILE=1
EXTRAS=(systemd gpio)

SERVICE_USER=climbd
PREFIX=/opt/climbd

usage() {
    cat <<EOF
Usage: $PROG [options]

  --root DIR          install into the root file system DIR instead of /
  --wheel FILE        the climbd wheel (default: the wheelhouse's, else built from --source)
  --source DIR        climbd source tree (default: $SOURCE)
  --requirements FILE locked requirements (default: the wheelhouse's requirements.txt, else
                      \`uv export --frozen\` of the source tree)
  --wheelhouse DIR    install offline from DIR (pip --no-index --find-links DIR)
  --config FILE       default config to install (default: SOURCE/config/climbd.toml)
  --python PATH       Python >= 3.10 inside the root (default: $PYTHON)
  --no-enable         do not enable the service
  --no-start          do not (re)start the service (only relevant without --root)
  --keep N            releases kept in $PREFIX/releases (default: $KEEP_RELEASES)
  --no-compile        do not byte-compile the venv (pip --no-compile): a faster install, a
                      slower first start; for throwaway roots such as the emulated arm64 tests
  -h, --help          this text
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*"; }

while [ $# -gt 0 ]; do
    case $1 in
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --wheel) WHEEL=${2:?}; shift 2 ;;
        --source) SOURCE=${2:?}; shift 2 ;;
        --requirements) REQUIREMENTS=${2:?}; shift 2 ;;
        --wheelhouse) WHEELHOUSE=${2:?}; shift 2 ;;
        --config) CONFIG=${2:?}; shift 2 ;;
        --python) PYTHON=${2:?}; shift 2 ;;
        --no-enable) ENABLE=0; shift ;;
        --no-start) START=0; shift ;;
        --keep) KEEP_RELEASES=${2:?}; shift 2 ;;
        --no-compile) COMPILE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$PROG: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "must run as root (it creates a user and installs a service)"
[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
ROOT=$(cd "$ROOT" && pwd)
[ -n "$CONFIG" ] || CONFIG=$SOURCE/config/climbd.toml
[ -f "$CONFIG" ] || die "default config not found: $CONFIG"
for f in "$SOURCE/systemd/climbd.service" "$SOURCE/systemd/60-climbd-gpio.rules"; do
    [ -f "$f" ] || die "missing $f (is --source a climbd source tree?)"
done
if [ -n "$WHEELHOUSE" ]; then
    [ -d "$WHEELHOUSE" ] || die "--wheelhouse $WHEELHOUSE is not a directory"
    WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
fi

# Paths seen from inside the root; R() maps them to the host.
R() { if [ "$ROOT" = / ]; then echo "$1"; else echo "$ROOT$1"; fi; }
in_root() { if [ "$ROOT" = / ]; then "$@"; else chroot "$ROOT" "$@"; fi; }

WORK=$(mktemp -d)
STAGE_IN=/var/tmp/climbd-install.$$          # inside the root
STAGE=$(R "$STAGE_IN")
MOUNTED=()
cleanup() {
    local m
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        m=${MOUNTED[i]}
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$WORK" "$STAGE"
}
trap cleanup EXIT

# --- 0. the root can run Python -------------------------------------------------------------
if [ "$ROOT" != / ]; then
    # chroot needs /proc and the basic device nodes (pip, gcc and venv use them).
    if [ ! -e "$ROOT/proc/self" ]; then
        mkdir -p "$ROOT/proc" && mount -t proc proc "$ROOT/proc" && MOUNTED+=("$ROOT/proc")
    fi
    if [ ! -c "$ROOT/dev/null" ] || [ ! -c "$ROOT/dev/urandom" ]; then
        mkdir -p "$ROOT/dev" && mount --bind /dev "$ROOT/dev" && MOUNTED+=("$ROOT/dev")
    fi
fi
[ -x "$(R "$PYTHON")" ] || die "no $PYTHON in $ROOT (install python3 there)"
if ! in_root "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' \
        2>/dev/null; then
    if [ "$ROOT" = / ] && command -v apt-get >/dev/null; then
        note "installing python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
    fi
    in_root "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' \
        || die "$PYTHON in $ROOT must be Python >= 3.10 with venv/ensurepip (apt-get install python3-venv)"
fi
PYVER=$(in_root "$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
note "target Python $PYVER in $ROOT"
case $PYVER in
    3.10|3.11|3.12) POSE_STACK="mediapipe 0.10.18 (mp.solutions)"; NEED_BUNDLE=0 ;;
    3.13) POSE_STACK="mediapipe 1.x (Tasks API) + climbd_blazepose_full"; NEED_BUNDLE=1 ;;
    *) die "Python $PYVER in $ROOT is not supported (climbd runs on Python 3.10-3.13)" ;;
esac
note "pose: $POSE_STACK"
if [ "$NEED_BUNDLE" = 1 ]; then
    # mediapipe 1.x's libmediapipe.so links libEGL.so.1 and libGLESv2.so.2 (it loads even
    # with no GPU; pose runs on the CPU): Debian packages libegl1 and libgles2.
    gl_missing() {
        local lib libs
        libs=$(in_root /sbin/ldconfig -p 2>/dev/null || true)
        for lib in libEGL.so.1 libGLESv2.so.2; do
            grep -qF "$lib " <<<"$libs" || return 0
        done
        return 1
    }
    if gl_missing && [ "$ROOT" = / ] && command -v apt-get >/dev/null; then
        note "installing libegl1 libgles2 (needed by mediapipe 1.x)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libegl1 libgles2
    fi
    if gl_missing; then
        die "mediapipe 1.x needs libEGL.so.1 and libGLESv2.so.2 in $ROOT" \
            "(apt-get install libegl1 libgles2 there)"
    fi
    # mediapipe 1.x's aarch64 build uses ARMv8.1 atomics (LSE) and aborts on a CPU without
    # them ("compiled with lse enabled, but this feature is not available"): a Cortex-A72
    # (Raspberry Pi 4) cannot run it. Checked where the CPU seen from the root is an arm64
    # one (the target itself; not an image build on another architecture).
    cpuinfo=$(in_root cat /proc/cpuinfo 2>/dev/null || true)
    if [ "$(in_root uname -m)" = aarch64 ] && grep -q '^CPU architecture' <<<"$cpuinfo" \
            && ! grep -q '^Features.*\batomics\b' <<<"$cpuinfo"; then
        die "this CPU has no ARMv8.1 atomics (LSE; e.g. the Cortex-A72 of a Raspberry Pi 4):" \
            "mediapipe 1.x for Python $PYVER cannot run on it. Use an OS with Python 3.11" \
            "(Raspberry Pi OS / Debian bookworm), where climbd uses mediapipe 0.10.18"
    fi
fi

# --- 1. groups and user ---------------------------------------------------------------------
root_opt=()
[ "$ROOT" = / ] || root_opt=(--root "$ROOT")
has_group() { grep -q "^$1:" "$(R /etc/group)"; }
for g in video gpio; do
    if ! has_group "$g"; then
        note "creating group $g"
        groupadd "${root_opt[@]}" --system "$g"
    fi
done
if grep -q "^$SERVICE_USER:" "$(R /etc/passwd)"; then
    usermod "${root_opt[@]}" --append --groups video,gpio "$SERVICE_USER"
else
    note "creating system user $SERVICE_USER"
    nologin=/usr/sbin/nologin
    [ -x "$(R $nologin)" ] || nologin=/bin/false
    useradd "${root_opt[@]}" --system --user-group --home-dir /var/lib/climbd \
        --no-create-home --shell "$nologin" --comment "climbd replay appliance" \
        --groups video,gpio "$SERVICE_USER"
fi

# --- 2. artefacts: wheel and locked requirements (built on the host) -------------------------
if [ -z "$WHEEL" ] && [ -n "$WHEELHOUSE" ]; then
    WHEEL=$(find "$WHEELHOUSE" -maxdepth 1 -name 'climbd-*.whl' | sort -V | tail -n 1)
fi
if [ -z "$WHEEL" ]; then
    note "building the climbd wheel from $SOURCE"
    if command -v uv >/dev/null; then
        uv build --wheel --out-dir "$WORK" "$SOURCE" >&2
    else
        python3 -m pip wheel --no-deps --wheel-dir "$WORK" "$SOURCE" >&2
    fi
    WHEEL=$(find "$WORK" -maxdepth 1 -name 'climbd-*.whl' | head -n 1)
fi
[ -f "$WHEEL" ] || die "no climbd wheel (give --wheel FILE or --wheelhouse DIR)"
if [ -z "$REQUIREMENTS" ] && [ -n "$WHEELHOUSE" ] && [ -f "$WHEELHOUSE/requirements.txt" ]; then
    REQUIREMENTS=$WHEELHOUSE/requirements.txt
fi
if [ -z "$REQUIREMENTS" ]; then
    command -v uv >/dev/null || die "need --requirements FILE (or uv to export the lock)"
    extra_args=()
    for e in "${EXTRAS[@]}"; do extra_args+=(--extra "$e"); done
    (cd "$SOURCE" && uv export --frozen --no-dev --no-emit-project "${extra_args[@]}" \
        --format requirements-txt --output-file "$WORK/requirements.txt" >/dev/null)
    REQUIREMENTS=$WORK/requirements.txt
fi
[ -f "$REQUIREMENTS" ] || die "requirements not found: $REQUIREMENTS"
MODEL_WHEEL=
if [ -n "$WHEELHOUSE" ]; then
    MODEL_WHEEL=$(find "$WHEELHOUSE" -maxdepth 1 -name 'climbd_blazepose_full-*.whl' | sort -V | tail -n 1)
fi
if [ -z "$MODEL_WHEEL" ] && [ "$NEED_BUNDLE" = 1 ]; then
    note "building the BlazePose model bundle from $SOURCE"
    if command -v uv >/dev/null && (cd "$SOURCE" && env -u VIRTUAL_ENV uv run --frozen \
            python -m climbd.pose.bundle "$WORK" >&2); then
        MODEL_WHEEL=$(find "$WORK" -maxdepth 1 -name 'climbd_blazepose_full-*.whl' | head -n 1)
    fi
    [ -n "$MODEL_WHEEL" ] || die "Python $PYVER needs the BlazePose model bundle" \
        "(climbd_blazepose_full-*.whl): give --wheelhouse from image/build-wheelhouse.sh"
fi
# e.g. climbd-0.1.0-py3-none-any.whl -> 0.1.0
VERSION=$(basename "$WHEEL" | cut -d- -f2)
RELEASE_BASE=$PREFIX/releases/$VERSION-$(date -u +%Y%m%dT%H%M%SZ)
RELEASE=$RELEASE_BASE
n=1
while [ -e "$(R "$RELEASE")" ]; do n=$((n + 1)); RELEASE=$RELEASE_BASE-$n; done
note "installing climbd $VERSION into $RELEASE"

mkdir -p "$STAGE"
cp "$WHEEL" "$STAGE/"
cp "$REQUIREMENTS" "$STAGE/requirements.txt"
[ -z "$MODEL_WHEEL" ] || cp "$MODEL_WHEEL" "$STAGE/"
pip_src=()
pip_env=(env)
if [ -n "$WHEELHOUSE" ]; then
    # Hard links when on the same file system (fast), else a copy.
    if ! cp -al "$WHEELHOUSE" "$STAGE/wheelhouse" 2>/dev/null; then
        rm -rf "$STAGE/wheelhouse"
        cp -a "$WHEELHOUSE" "$STAGE/wheelhouse"
    fi
    pip_src=(--no-index --find-links "$STAGE_IN/wheelhouse" --no-build-isolation)
    # Offline means hermetic: no pip configuration (index, find-links) from this machine.
    while read -r var; do pip_env+=(-u "$var"); done < <(compgen -e | grep '^PIP_' || true)
    pip_env+=(PIP_CONFIG_FILE=/dev/null)
fi

# --- 3. the release's virtual environment ---------------------------------------------------
mkdir -p "$(R "$PREFIX/releases")"
in_root "$PYTHON" -m venv "$RELEASE"
PIP=("${pip_env[@]}" "$RELEASE/bin/python" -m pip --disable-pip-version-check --no-cache-dir
     --no-input)
pip_compile=()
[ "$COMPILE" = 1 ] || pip_compile=(--no-compile)
if [ -n "$WHEELHOUSE" ] && [ -n "$(find "$WHEELHOUSE" -maxdepth 1 -name '*.tar.gz' -print -quit)" ]; then
    # sdists are built without isolation (offline): setuptools and wheel must be present.
    in_root "${PIP[@]}" install --quiet --no-index --find-links "$STAGE_IN/wheelhouse" \
        setuptools wheel 2>/dev/null || note "setuptools/wheel not in the wheelhouse; using the venv's"
fi
# --no-deps: the requirements are the complete, resolved lock (with uv's dependency
# overrides, which pip would otherwise try to undo). --require-hashes: only the locked files.
in_root "${PIP[@]}" install --quiet --no-deps --require-hashes "${pip_compile[@]}" \
    "${pip_src[@]}" --requirement "$STAGE_IN/requirements.txt" \
    || die "installing the locked requirements failed"
in_root "${PIP[@]}" install --quiet --no-deps --no-index "${pip_compile[@]}" \
    "$STAGE_IN/$(basename "$WHEEL")" || die "installing $(basename "$WHEEL") failed"
if [ -n "$MODEL_WHEEL" ]; then
    in_root "${PIP[@]}" install --quiet --no-deps --no-index "${pip_compile[@]}" \
        "$STAGE_IN/$(basename "$MODEL_WHEEL")" || die "installing $(basename "$MODEL_WHEEL") failed"
fi
in_root "$RELEASE/bin/climbd" --version >/dev/null || die "the new climbd does not start"

# --- 4. configuration -----------------------------------------------------------------------
CONF_DIR=/etc/climbd
mkdir -p "$(R $CONF_DIR)"
if [ -e "$(R $CONF_DIR/climbd.toml)" ]; then
    note "keeping existing $CONF_DIR/climbd.toml (new default: climbd.toml.dist)"
    install -m 0644 "$CONFIG" "$(R $CONF_DIR/climbd.toml.dist)"
else
    install -m 0644 "$CONFIG" "$(R $CONF_DIR/climbd.toml)"
fi
if ! in_root "$RELEASE/bin/climbd" check-config "$CONF_DIR/climbd.toml"; then
    rm -rf "$(R "$RELEASE")"
    die "$CONF_DIR/climbd.toml is not valid for climbd $VERSION; fix it and run again" \
        "(the previous release stays active)"
fi

# --- 5. switch /opt/climbd/venv to the new release (atomic rename of a symlink) -------------
VENV=$PREFIX/venv
if [ -d "$(R $VENV)" ] && [ ! -L "$(R $VENV)" ]; then
    mv "$(R $VENV)" "$(R "$PREFIX/releases/legacy-$(date -u +%Y%m%dT%H%M%SZ)")"
fi
ln -sfn "$RELEASE" "$(R "$VENV.new")"
mv -T "$(R "$VENV.new")" "$(R $VENV)"
# Prune old releases, keeping the newest $KEEP_RELEASES (the active one always stays).
mapfile -t releases < <(find "$(R "$PREFIX/releases")" -mindepth 1 -maxdepth 1 -type d \
    -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2-)
for ((i = KEEP_RELEASES; i < ${#releases[@]}; i++)); do
    [ "${releases[i]}" = "$(R "$RELEASE")" ] || rm -rf "${releases[i]}"
done

# --- 6. unit, udev rule, enable ---------------------------------------------------------------
install -D -m 0644 "$SOURCE/systemd/climbd.service" "$(R /etc/systemd/system/climbd.service)"
install -D -m 0644 "$SOURCE/systemd/60-climbd-gpio.rules" \
    "$(R /etc/udev/rules.d/60-climbd-gpio.rules)"
live_systemd=0
if [ "$ROOT" = / ] && [ -d /run/systemd/system ]; then live_systemd=1; fi
if [ "$ENABLE" = 1 ]; then
    if command -v systemctl >/dev/null; then
        if [ "$live_systemd" = 1 ]; then
            systemctl daemon-reload
            systemctl enable climbd.service
        else
            systemctl --root="$ROOT" enable climbd.service
        fi
    else
        # What `systemctl enable` does for WantedBy=multi-user.target.
        mkdir -p "$(R /etc/systemd/system/multi-user.target.wants)"
        ln -sfn /etc/systemd/system/climbd.service \
            "$(R /etc/systemd/system/multi-user.target.wants/climbd.service)"
    fi
fi
if [ "$live_systemd" = 1 ]; then
    if command -v udevadm >/dev/null; then
        # Apply the gpio rule to chips that exist already (best effort).
        udevadm control --reload || true
        udevadm trigger --subsystem-match=gpio || true
    fi
    [ "$ENABLE" = 1 ] || systemctl daemon-reload
    if [ "$START" != 0 ]; then
        systemctl restart climbd.service
        note "climbd restarted; follow it with: journalctl -u climbd -f"
    fi
fi
note "installed climbd $VERSION ($RELEASE)"
