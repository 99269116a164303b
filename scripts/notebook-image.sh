#!/usr/bin/env bash
# The recipe of the offline notebook image the container tests run (docs/container-image.md has
# the contract it follows): Debian bookworm from debootstrap, user ma-user 1000:100, the JupyterLab
# of jupyter-requirements.txt in /home/ma-user/anaconda3 with the prebuilt auto-stop extension,
# /data and /cache. Usage (root): notebook-image.sh TAG. Call it through notebook_image
# (containers.sh), which names the image after this file's hash: edit it and the next run
# builds a new image. Builds under $ATELIER_CACHE and imports into podman only once complete.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tag="$1"

suite=bookworm
mirror="${ATELIER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
debs=python3,python3-venv,ca-certificates,procps
home=/home/ma-user
conda=$home/anaconda3
path=$conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

work="$(mktemp -d "$ATELIER_CACHE/notebook-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

# Runs a command chrooted into $1 with /proc and /dev mounted in a private mount namespace, so
# the mounts go away with the command even when the build is interrupted.
in_root() {
  unshare --mount --propagation private sh -ec \
    'mount -t proc proc "$0/proc"; mount --rbind /dev "$0/dev"; exec chroot "$0" "$@"' "$@"
}

# The bare debootstrap result, kept as a tarball keyed by what goes into it: changes to the
# steps after it do not download Debian again.
mkdir -p "$ATELIER_CACHE/debootstrap/debs"
base="$ATELIER_CACHE/debootstrap/$suite-$(printf '%s\n' minbase "$mirror" "$debs" | sha256sum | cut -c1-16).tar"
if [ ! -f "$base" ]; then
  log "debootstrap $suite ($debs) from $mirror (once; a few minutes)"
  unshare --mount --propagation private debootstrap --variant=minbase --include="$debs" \
    --cache-dir="$ATELIER_CACHE/debootstrap/debs" "$suite" "$work/base" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work"/base/var/cache/apt/archives/*.deb "$work"/base/var/lib/apt/lists/*
  tar --numeric-owner -C "$work/base" -cf "$base.part" . && mv "$base.part" "$base"
  rm -rf "$work/base"
fi
mkdir "$rootfs"
tar --numeric-owner -C "$rootfs" -xpf "$base"

log "installing JupyterLab and the auto-stop extension into the image"
# For the build only: the host's DNS and CA bundle (downloads may go through a TLS proxy).
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/tmp/host-ca.crt"
cp "$ROOT/scripts/jupyter-requirements.txt" "$rootfs/tmp/"
mkdir -p "$rootfs$conda/share/jupyter/labextensions/@atelier"
cp -r "$ROOT/notebook-runtime/jupyterlab-extension/labextension" \
  "$rootfs$conda/share/jupyter/labextensions/@atelier/auto-stop"
in_root "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  PIP_CERT=/tmp/host-ca.crt SSL_CERT_FILE=/tmp/host-ca.crt REQUESTS_CA_BUNDLE=/tmp/host-ca.crt \
  sh -ec "
    useradd --uid 1000 --gid 100 --no-create-home --home-dir $home --shell /bin/bash ma-user
    cp -rT /etc/skel $home
    mkdir -p $home/work /data /cache
    python3 -m venv $conda
    $conda/bin/pip install --no-cache-dir --disable-pip-version-check --no-input -q \
      -r /tmp/jupyter-requirements.txt
    chown -R 1000:100 $home /data /cache
    echo 'export PATH=\"$conda/bin:\$PATH\"' >/etc/profile.d/anaconda3.sh
  " >&2
rm -rf "$rootfs"/tmp/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
: >"$rootfs/etc/resolv.conf"
echo localhost >"$rootfs/etc/hostname"

# USER stays root: the runtime runs as PID 1 and drops to uid 1000 itself.
tar --numeric-owner -C "$rootfs" -cf "$work/rootfs.tar" .
podman import --quiet --message "Atelier offline notebook image (scripts/notebook-image.sh)" \
  --change "ENV PATH=$path" --change "ENV HOME=$home" --change "ENV LANG=C.UTF-8" \
  --change "WORKDIR $home" --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$tag" >/dev/null
log "built $tag"
