#!/usr/bin/env bash
# A stand-in for the official python:3.11-slim-bookworm image, built without any registry:
# a Debian rootfs from the host's own apt mirror (debootstrap), then Python from Debian.
#
#   ci/base_image.sh [TAG]      prints TAG (default sage-ci/python:3.11-bookworm) when ready
#
# Kept in the engine once built, and saved under $SAGE_CI_CACHE (default ~/.cache/sage-ci)
# so a new engine loads it in seconds instead of running debootstrap again (~45 s).
# The host's apt sources, apt.conf.d and extra CA certificates go into the image, so apt
# and pip inside containers reach the package registries the way the host does.
# Needs root (debootstrap) and a running Docker engine. Logs go to stderr.
set -euo pipefail
export DOCKER_BUILDKIT=0  # the legacy builder: the only one Debian's engine has here

TAG=${1:-sage-ci/python:3.11-bookworm}
SUITE=bookworm
ROOTFS_TAG=sage-ci/debian:$SUITE-minbase
CACHE_DIR=${SAGE_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sage-ci}
CACHE_FILE=$CACHE_DIR/$(echo "$TAG" | tr '/:' '__').tar.gz

log() { echo "base_image: $*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

mkdir -p "$CACHE_DIR"
# One builder at a time: a second run waits, then finds the image.
exec 9>"$CACHE_DIR/.lock"
command -v flock >/dev/null && flock 9

if have_image "$TAG"; then
    log "$TAG is already in the engine"
    echo "$TAG"; exit 0
fi
if [ -s "$CACHE_FILE" ]; then
    log "loading $TAG from $CACHE_FILE"
    if gzip -dc "$CACHE_FILE" | docker load >&2 && have_image "$TAG"; then
        echo "$TAG"; exit 0
    fi
    log "the cached image is unusable; building it again"
    rm -f "$CACHE_FILE"
fi

# The mirror that serves $SUITE itself (not -security/-updates), from the host's apt sources.
host_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        # deb822: stanzas separated by blank lines; want the URIs of one whose Suites list $SUITE
        awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; ok = 0; deb = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)   { uris = $i; sub(/^URIs:[ \t]*/, "", uris); split(uris, u, /[ \t]+/); uris = u[1] }
                    if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
                    if ($i ~ /^Types:/ && $i ~ /(^|[ \t])deb([ \t]|$)/) deb = 1
                }
                if (ok && deb && uris != "") { print uris; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -e "$f" ] || continue
        # one-line form: deb [options] URI SUITE COMPONENTS...
        sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }'
    done
}
MIRROR=$(host_mirror | head -n 1)
if [ -z "$MIRROR" ]; then
    log "no apt source for '$SUITE' in /etc/apt/sources.list{,.d/}: cannot debootstrap"
    exit 2
fi

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get install -y debootstrap >&2 || { apt-get update >&2 && apt-get install -y debootstrap >&2; }
fi

WORK=$(mktemp -d /tmp/sage-ci-rootfs.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOTFS=$WORK/rootfs
started=$(date +%s)
log "debootstrap --variant=minbase $SUITE from the host's mirror (log: $WORK/debootstrap.log)"
if ! debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    log "debootstrap failed"
    exit 1
fi

# The host's apt configuration: its sources (and the keyrings they name), its apt.conf.d.
rm -f "$ROOTFS/etc/apt/sources.list"
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    if [ -e "$f" ]; then sources+=("$f"); cp "$f" "$ROOTFS$f"; fi
done
for keyring in $( (grep -h -o -E 'Signed-By:[[:space:]]*/[^[:space:]]+|signed-by=/[^] ]+' "${sources[@]}" \
                   || true) | sed -E 's/^Signed-By:[[:space:]]*//; s/^signed-by=//' | sort -u); do
    if [ -f "$keyring" ] && [ ! -e "$ROOTFS$keyring" ]; then
        mkdir -p "$(dirname "$ROOTFS$keyring")"
        cp "$keyring" "$ROOTFS$keyring"
    fi
done
cp -a /etc/apt/apt.conf.d/. "$ROOTFS/etc/apt/apt.conf.d/"
# Extra CA certificates (an HTTPS proxy's, say): ca-certificates, installed below, trusts them.
mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
    cp -a /usr/local/share/ca-certificates/. "$ROOTFS/usr/local/share/ca-certificates/"
fi
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

log "importing the rootfs as $ROOTFS_TAG"
tar -C "$ROOTFS" -c . | docker import - "$ROOTFS_TAG" >&2

# What the official image offers: python3 with venv and pip, `python`, UTF-8, trusted CAs.
cat >"$WORK/Dockerfile" <<EOF
FROM $ROOTFS_TAG
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \\
 && apt-get install -y --no-install-recommends \\
        ca-certificates python3 python3-venv python3-pip python-is-python3 \\
 && update-ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
EOF
log "adding python3 (apt inside the image)"
docker build -q --force-rm -t "$TAG" - <"$WORK/Dockerfile" >&2
docker rmi "$ROOTFS_TAG" >/dev/null 2>&1 || true  # its layer lives on inside $TAG

log "saving $TAG to $CACHE_FILE"
docker save "$TAG" | gzip -1 >"$CACHE_FILE.tmp"
mv "$CACHE_FILE.tmp" "$CACHE_FILE"
log "built $TAG in $(( $(date +%s) - started )) s"
echo "$TAG"
