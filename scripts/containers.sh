# What the docker backend's tests need, sourced after lib.sh: Podman's Docker-compatible API on a
# socket, a local registry and the offline notebook image (docs/container-image.md). Root only,
# like need_debs; each function is idempotent and returns at once when its thing is already up.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Podman's Docker-compatible API (what bollard talks to): prints its socket, unix://<path>.
# Starts `podman system service` on $ATELIER_CACHE/podman/podman.sock when nothing answers there.
podman_socket() {
  local dir="$ATELIER_CACHE/podman"
  local sock="$dir/podman.sock"
  # nftables: the gateway keeps container notebooks off the host with a table of its own.
  need_debs podman runc curl nftables || return 1
  # Needed where the hard nofile limit is below Podman's default 1048576 (else runc fails with
  # "error setting rlimit type 7"), and runc as the runtime; a drop-in leaves the rest alone.
  write_if_changed /etc/containers/containers.conf.d/50-atelier.conf '# Written by Atelier'"'"'s scripts/containers.sh (podman_socket).
[containers]
default_ulimits = []

[engine]
runtime = "runc"'
  # A service started from a directory that was removed since (an old clone) cannot start
  # containers (conmon: "Failed to get working directory"): stop it and start one afresh.
  local pid
  for pid in $(pgrep -f "podman system service --time=0 unix://$sock" || true); do
    if readlink "/proc/$pid/cwd" 2>/dev/null | grep -q ' (deleted)$'; then
      log "restarting podman system service: its working directory was removed"
      kill "$pid" 2>/dev/null || true
      sleep 1
    fi
  done
  if ! curl -fsS --max-time 2 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
    log "starting podman system service on $sock (log: $dir/service.log)"
    mkdir -p "$dir"
    rm -f "$sock"
    # From its own directory, which outlives any clone.
    (cd "$dir" && start_service "$dir/service.log" \
      "curl -fsS --max-time 2 --unix-socket '$sock' http://d/_ping >/dev/null 2>&1" \
      podman system service --time=0 "unix://$sock") || return 1
  fi
  printf 'unix://%s\n' "$sock"
}

# A plain-HTTP image registry on 127.0.0.1 (port $ATELIER_TEST_REGISTRY_PORT, 5000 by default),
# Debian's docker-registry with its own config and storage under $ATELIER_CACHE/registry, marked
# insecure for podman. Prints its address, host:port.
registry_addr() {
  local port="${ATELIER_TEST_REGISTRY_PORT:-5000}"
  local addr="127.0.0.1:$port" dir="$ATELIER_CACHE/registry"
  need_debs docker-registry curl || return 1
  write_if_changed /etc/containers/registries.conf.d/50-atelier.conf '# Written by Atelier'"'"'s scripts/containers.sh (registry_addr): the test registry speaks HTTP.
[[registry]]
location = "'"$addr"'"
insecure = true'
  if ! curl -fsS --max-time 2 "http://$addr/v2/" >/dev/null 2>&1; then
    # The packaged service listens on all interfaces and wants a password: keep it stopped.
    if [ -d /run/systemd/system ]; then
      systemctl disable --now docker-registry >/dev/null 2>&1 || true
    elif /etc/init.d/docker-registry status >/dev/null 2>&1; then
      /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    fi
    log "starting a registry on $addr (storage and log: $dir)"
    mkdir -p "$dir/storage"
    write_if_changed "$dir/config-$port.yml" "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $addr"
    start_service "$dir/registry.log" "curl -fsS --max-time 2 'http://$addr/v2/' >/dev/null 2>&1" \
      docker-registry serve "$dir/config-$port.yml" || return 1
  fi
  printf '%s\n' "$addr"
}

# The offline notebook image of scripts/notebook-image.sh, built once per content hash of that
# recipe, jupyter-requirements.txt and the prebuilt extension. Prints its reference,
# localhost/atelier-notebook:<hash>.
notebook_image() {
  local hash tag
  need_debs podman runc debootstrap || return 1
  hash="$(cd "$ROOT" && {
    sha256sum scripts/notebook-image.sh scripts/jupyter-requirements.txt
    find notebook-runtime/jupyterlab-extension/labextension -type f -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16)"
  tag="localhost/atelier-notebook:$hash"
  if ! podman image exists "$tag"; then
    log "building the notebook image $tag (once; the first debootstrap takes minutes)"
    "$ROOT/scripts/notebook-image.sh" "$tag" >&2 || return 1
  fi
  printf '%s\n' "$tag"
}
