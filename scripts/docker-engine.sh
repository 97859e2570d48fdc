#!/usr/bin/env bash
# Make `docker build` of this project work on a Debian/Ubuntu machine without a container registry:
#   1. install docker.io and debootstrap (apt) if missing;
#   2. start dockerd in the background if no engine answers (there may be no systemd);
#   3. build the base image local/bookworm:latest with debootstrap (stands in for debian:bookworm-slim);
#   4. copy the host's extra CA certificates into docker/certs/ (for an HTTPS-intercepting proxy);
#   5. copy CPU-only torch wheels into docker/wheelhouse/ (the image then installs torch offline).
# Safe to run again: each step is skipped when its result is already there.
#
# Environment:
#   LOCAL_BASE_IMAGE  tag of the debootstrapped base image   (default local/bookworm:latest)
#   TORCH_WHEEL_DIR   where to look for torch-*+cpu-*.whl     (default: pip's find-links)
#   DOCKERD_LOG       dockerd's log file                      (default /tmp/dockerd.log)
#   SKIP_LOCAL_BASE=1 do not build the local base image (you can pull debian:bookworm-slim)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_BASE_IMAGE="${LOCAL_BASE_IMAGE:-local/bookworm:latest}"
DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
SKIP_LOCAL_BASE="${SKIP_LOCAL_BASE:-0}"

log() { printf '[docker-engine] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo"
fi

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* yourself"
    log "installing $* (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

engine_answers() { $SUDO docker info >/dev/null 2>&1; }

# --- 1. packages --------------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
if [[ "$SKIP_LOCAL_BASE" != 1 ]]; then
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
fi
if ((${#missing[@]})); then
    apt_install "${missing[@]}"
fi
command -v docker >/dev/null 2>&1 || die "no docker client on PATH"

# --- 2. engine ----------------------------------------------------------------------------------
if engine_answers; then
    log "docker engine is running"
else
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the engine must outlive this script and not get its terminal's signals.
    $SUDO setsid nohup dockerd --storage-driver=overlay2 >"$DOCKERD_LOG" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        engine_answers && break
        sleep 1
    done
    engine_answers || { tail -n 20 "$DOCKERD_LOG" >&2 || true; die "dockerd did not answer within 60 s"; }
    log "docker engine is up"
fi

# --- 3. local base image ------------------------------------------------------------------------
if [[ "$SKIP_LOCAL_BASE" == 1 ]]; then
    log "SKIP_LOCAL_BASE=1: not building $LOCAL_BASE_IMAGE"
elif $SUDO docker image inspect "$LOCAL_BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $LOCAL_BASE_IMAGE exists"
else
    sources=/etc/apt/sources.list.d/debian.sources
    mirror=""
    [[ -f "$sources" ]] && mirror="$(awk '/^URIs:/{print $2; exit}' "$sources")"
    mirror="${mirror:-http://deb.debian.org/debian}"
    rootfs="$(mktemp -d /tmp/bookworm-rootfs.XXXXXX)"
    trap '$SUDO rm -rf "$rootfs"' EXIT
    log "debootstrapping bookworm from $mirror (about 30 s)"
    $SUDO debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/tmp/debootstrap.log 2>&1 \
        || { tail -n 20 /tmp/debootstrap.log >&2; die "debootstrap failed (log: /tmp/debootstrap.log)"; }
    if [[ -f "$sources" ]]; then
        $SUDO cp "$sources" "$rootfs/etc/apt/sources.list.d/"
        $SUDO rm -f "$rootfs/etc/apt/sources.list"
    fi
    $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    $SUDO tar -C "$rootfs" -c . | $SUDO docker import - "$LOCAL_BASE_IMAGE" >/dev/null
    $SUDO rm -rf "$rootfs"
    trap - EXIT
    log "built base image $LOCAL_BASE_IMAGE"
fi

# --- 4. proxy CA certificates -------------------------------------------------------------------
certs_dir="$REPO_ROOT/docker/certs"
mkdir -p "$certs_dir"
shopt -s nullglob
certs=(/usr/local/share/ca-certificates/*.crt)
if ((${#certs[@]})); then
    for crt in "${certs[@]}"; do
        cmp -s "$crt" "$certs_dir/$(basename "$crt")" || cp "$crt" "$certs_dir/"
    done
    log "CA certificates in docker/certs/: ${#certs[@]}"
else
    log "no extra CA certificates in /usr/local/share/ca-certificates/"
fi

# --- 5. CPU-only torch wheels -------------------------------------------------------------------
# scripts/torch_source.py finds them as `make setup` does (pip's find-links, pyproject's range);
# any Python tag here: the image's Python picks its own in the Dockerfile.
wheelhouse="$REPO_ROOT/docker/wheelhouse"
mkdir -p "$wheelhouse"
finder=(python3 "$REPO_ROOT/scripts/torch_source.py" --wheels --any-python)
if [[ -n "${TORCH_WHEEL_DIR:-}" ]]; then
    finder+=(--find-links "$TORCH_WHEEL_DIR")
fi
mapfile -t wheels < <("${finder[@]}" 2>/dev/null || true)
if ((${#wheels[@]})); then
    for whl in "${wheels[@]}"; do
        [[ -f "$wheelhouse/$(basename "$whl")" ]] || cp "$whl" "$wheelhouse/"
    done
    log "torch CPU wheels in docker/wheelhouse/: ${#wheels[@]}"
else
    log "no torch-*+cpu-*.whl in ${TORCH_WHEEL_DIR:-the find-links of pip}: the build will download torch from download.pytorch.org"
fi

# --- done ---------------------------------------------------------------------------------------
build_args=()
if [[ "$SKIP_LOCAL_BASE" != 1 ]]; then
    build_args+=(--build-arg "BASE_IMAGE=$LOCAL_BASE_IMAGE")
fi
log "ready; build the image with:"
echo "docker build ${build_args[*]} -t mnist-service ."
