#!/bin/bash -e
# Install climbd into the image, offline, with the same script as on a running system:
# scripts/install.sh --root "${ROOTFS_DIR}" (user and groups, /opt/climbd/venv from the
# wheelhouse, /etc/climbd/climbd.toml, the unit and the gpio udev rule, `systemctl enable`).
#
# files/climbd/ is staged by image/build-image.sh: scripts/install.sh, systemd/, config/ and
# wheelhouse/ (aarch64, CPython 3.13 for trixie or 3.11 for bookworm, from
# image/build-wheelhouse.sh, with the climbd_blazepose_full model bundle). pi-gen runs this with
# the sub-stage directory as the working directory; on_chroot runs commands in the image
# (through qemu-user when the build machine is not arm64).
PAYLOAD="$(pwd)/files/climbd"
[ -x "${PAYLOAD}/scripts/install.sh" ] || { echo "climbd payload missing: run image/build-image.sh" >&2; exit 1; }

# Compilers and headers for the wheelhouse's sdists (systemd-python): installed here and
# purged again below, so the image carries no build tools it did not have before.
BUILD_DEPS="gcc libc6-dev pkg-config libsystemd-dev python3-dev"
on_chroot <<EOC
set -e
dpkg-query -W -f='\${Package}\n' | sort > /var/tmp/climbd-pkgs-before
apt-get install -y --no-install-recommends ${BUILD_DEPS}
EOC

"${PAYLOAD}/scripts/install.sh" --root "${ROOTFS_DIR}" --source "${PAYLOAD}" \
	--wheelhouse "${PAYLOAD}/wheelhouse" --no-start

on_chroot <<'EOC'
set -e
dpkg-query -W -f='${Package}\n' | sort > /var/tmp/climbd-pkgs-after
new=$(comm -13 /var/tmp/climbd-pkgs-before /var/tmp/climbd-pkgs-after)
if [ -n "$new" ]; then apt-get purge -y $new; fi
apt-get autoremove -y --purge
rm -f /var/tmp/climbd-pkgs-before /var/tmp/climbd-pkgs-after
# Build matplotlib's font cache now (imported by mediapipe), so the first boot does not
# spend ~10 s on it; the directory is the unit's CacheDirectory= (MPLCONFIGDIR).
install -d -o climbd -g climbd -m 0750 /var/cache/climbd /var/cache/climbd/matplotlib
runuser -u climbd -- env MPLCONFIGDIR=/var/cache/climbd/matplotlib \
	/opt/climbd/venv/bin/python -c "import matplotlib.font_manager"
# The config is validated once more in the image itself.
/opt/climbd/venv/bin/climbd check-config /etc/climbd/climbd.toml
EOC
