#!/usr/bin/env bash
# Build the chainyard image without Docker Hub: a Debian bookworm base from debootstrap plus Debian's
# python3 (cached under its tag), then ./Dockerfile on it. Needs root, docker.io and debootstrap.
#   tools/image/build.sh [TAG [DOCKER-BUILD-OPTION...]]   (TAG: default chainyard:local; the options go to docker
#                                                          build, e.g. --build-arg VARIANT=cuda for the CUDA image)
# Environment: CHAINYARD_BASE_IMAGE (default chainyard-base:bookworm-python3; rebuilt only when missing),
# DEBIAN_MIRROR (default: the first Debian URI apt uses here), DOCKERD_LOG (default /tmp/chainyard-dockerd.log).
# The dockerd this starts, when none answers, makes no bridge network (--bridge=none, no iptables): run
# containers with --network host or --network none. The machine's pip settings (index, CA bundle) go to
# the build as BuildKit secrets, generated under a temporary directory and removed at exit; local file://
# indexes and find-links directories are not visible in the build and are left out.
# Prints "image TAG size_bytes=N build_seconds=S base_seconds=B" as its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=${1:-chainyard:local}
shift $(($# > 0 ? 1 : 0))
base=${CHAINYARD_BASE_IMAGE:-chainyard-base:bookworm-python3}
log=${DOCKERD_LOG:-/tmp/chainyard-dockerd.log}
# Debian's client: its BuildKit is built in (a newer client wants the buildx plugin)
docker=docker
[[ -x /usr/bin/docker ]] && docker=/usr/bin/docker

if ! "$docker" info >/dev/null 2>&1; then
    echo "starting dockerd (log: $log)" >&2
    nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$log" 2>&1 &
    for _ in $(seq 60); do
        "$docker" info >/dev/null 2>&1 && break
        sleep 1
    done
    "$docker" info >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

base_seconds=0
if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
    mirror=${DEBIAN_MIRROR:-$(grep -h -o -E '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | head -1 | awk '{print $2}' || true)}
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "building $base from debootstrap ($mirror)" >&2
    started=$SECONDS
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$work/rootfs" "$mirror" >&2
    rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*.bin \
        "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/log/*.log
    tar -C "$work/rootfs" --numeric-owner -c . | "$docker" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
        --change 'CMD ["python3"]' - "$base" >/dev/null
    rm -rf "$work/rootfs"
    base_seconds=$((SECONDS - started))
fi

# pip settings as the build will see them: http(s) indexes only; the CA bundle as its own secret
python3 - "$work" <<'EOF'
import os, subprocess, sys
work = sys.argv[1]
found = {}
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
for line in listed.splitlines():
    key, _, value = line.partition("=")
    found[key.split(".", 1)[-1]] = value.strip().strip("'\"")
for key in ("index-url", "extra-index-url", "trusted-host", "default-timeout", "cert"):
    env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
    if env:
        found[key] = env
web = lambda value: " ".join(u for u in value.split() if u.startswith(("http://", "https://")))
conf = {"disable-pip-version-check": "1"}
for key in ("index-url", "extra-index-url"):
    if web(found.get(key, "")):
        conf[key] = web(found[key])
for key in ("trusted-host", "default-timeout"):
    if found.get(key):
        conf[key] = found[key]
ca = found.get("cert") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
if os.path.isfile(ca):
    os.symlink(os.path.realpath(ca), os.path.join(work, "pip-ca"))
    conf["cert"] = "/run/secrets/pip-ca"
else:
    open(os.path.join(work, "pip-ca"), "w").close()
with open(os.path.join(work, "pip.conf"), "w") as out:
    out.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
EOF

started=$SECONDS
DOCKER_BUILDKIT=1 "$docker" build --network host --progress plain \
    --secret id=pip.conf,src="$work/pip.conf" --secret id=pip-ca,src="$work/pip-ca" \
    --build-arg PYTHON_IMAGE="$base" "$@" -t "$tag" . >&2
build_seconds=$((SECONDS - started))
size=$("$docker" image inspect -f '{{.Size}}' "$tag")
echo "image $tag size_bytes=$size build_seconds=$build_seconds base_seconds=$base_seconds"
