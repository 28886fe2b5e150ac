#!/usr/bin/env bash
# CI only: a Docker daemon, and stand-ins for the base images that the Dockerfile and
# docker-compose.yml name (python:3.11-slim, redis:7-alpine, postgres:16-alpine).
#
# No image registry is reachable from CI, so the stand-ins are made here from Debian
# bookworm with debootstrap, from the mirror this machine's own apt sources use:
#   python:3.11-slim    Debian's Python 3.11 (+ venv), a `python` link, this machine's
#                       CA bundle (pip in a build reaches the index as the host does)
#   redis:7-alpine      the same root file system, `redis-server` (Debian's Redis 7)
#   postgres:16-alpine  Debian's PostgreSQL 15 behind an entrypoint that honours
#                       POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB (as the official
#                       image's does); PGPORT or `-p` picks the port
# Users pull the real images; the files users run keep the real names.
#
# Cached between runs: the downloaded packages under $CACHE/debs, the root file
# system tarballs under $CACHE/<key>, and the imported images (labelled with the key).
# The key is a hash of this script and of the CA bundle, so changing either remakes
# them. A tag that exists without our label is a real image and is left alone.
set -euo pipefail

CACHE=${TASKCTL_CI_CACHE:-/var/cache/taskctl-ci}
CA=/etc/ssl/certs/ca-certificates.crt
KEY=$(cat "$0" "$CA" | sha256sum | cut -c1-16)
LABEL=taskctl-ci.standin
DIR=$CACHE/$KEY
log() { echo "docker-standins: $*" >&2; }

# --- the daemon: vfs (works in any container), no bridge, no iptables rules --------
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/taskctl-ci-dockerd.log)"
  setsid dockerd --storage-driver=vfs --bridge=none --iptables=false \
    >/var/log/taskctl-ci-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null || { tail -20 /var/log/taskctl-ci-dockerd.log >&2; exit 1; }
fi

ours() { [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" = "$KEY" ]; }
real() { docker image inspect "$1" >/dev/null 2>&1 && [ -z "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1")" ]; }
needed() { for t in "$@"; do ours "$t" || real "$t" || return 0; done; return 1; }
if ! needed python:3.11-slim redis:7-alpine postgres:16-alpine; then
  log "base images present (key $KEY)"
  exit 0
fi

MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2 == "bookworm" { print $1; exit }')
[ -n "$MIRROR" ] || { log "no bookworm source in this machine's apt sources"; exit 1; }
mkdir -p "$DIR" "$CACHE/debs"

# rootfs NAME PACKAGES [SETUP]: debootstrap once, keep the tarball.
rootfs() {
  local name=$1 include=$2 setup=${3:-} root
  [ -s "$DIR/$name.tar" ] && return 0
  root=$(mktemp -d "$DIR/$name.XXXX")
  chmod 755 "$root" # it becomes the image's /: mktemp made it private
  log "debootstrap $name ($include) from the apt mirror"
  debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$include" \
    bookworm "$root" "$MIRROR" >"$DIR/$name.log" 2>&1 || { tail -20 "$DIR/$name.log" >&2; exit 1; }
  [ -z "$setup" ] || "$setup" "$root"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$DIR/$name.tar.part" . && mv "$DIR/$name.tar.part" "$DIR/$name.tar"
  rm -rf "$root"
}

python_setup() {
  ln -sf /usr/bin/python3 "$1/usr/local/bin/python"
  cp "$CA" "$1/etc/ssl/certs/ca-certificates.crt"
}

postgres_setup() {
  cat >"$1/usr/local/bin/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
# CI stand-in for the official postgres image's entrypoint: the first start creates
# PGDATA with POSTGRES_USER (superuser), POSTGRES_PASSWORD and POSTGRES_DB; then the
# server runs as the postgres user with the given arguments (`postgres -p PORT ...`).
set -eu
if [ "${1:-}" = postgres ]; then shift; fi
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "POSTGRES_PASSWORD must be set" >&2; exit 1; }
  pw=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
  chown postgres "$pw"
  as_pg initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    as_pg psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
      -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
    as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups \
  postgres -D "$PGDATA" -c listen_addresses='*' "$@"
ENTRYPOINT
  chmod 755 "$1/usr/local/bin/docker-entrypoint.sh"
}

rootfs python python3,python3-venv,ca-certificates,redis-server python_setup
rootfs postgres postgresql-15 postgres_setup

# import_image TAG TARBALL CHANGES...: replace our old stand-in, never a real image.
import_image() {
  local tag=$1 tar=$2 old
  shift 2
  if real "$tag" || ours "$tag"; then return 0; fi
  old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  log "docker import $tag"
  local changes=(--change "LABEL $LABEL=$KEY")
  for c in "$@"; do changes+=(--change "$c"); done
  docker import "${changes[@]}" "$tar" "$tag" >/dev/null
  [ -z "$old" ] || docker rmi "$old" >/dev/null 2>&1 || true
}

PATH_ENV='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
import_image python:3.11-slim "$DIR/python.tar" "$PATH_ENV" 'ENV LANG=C.UTF-8' \
  "ENV PIP_CERT=$CA" 'CMD ["python3"]'
import_image redis:7-alpine "$DIR/python.tar" "$PATH_ENV" 'WORKDIR /data' 'EXPOSE 6379' \
  'CMD ["redis-server"]'
import_image postgres:16-alpine "$DIR/postgres.tar" \
  'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  'ENV LANG=C.UTF-8' 'ENV PGDATA=/var/lib/postgresql/data' 'EXPOSE 5432' \
  'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["postgres"]'

# Older keys' tarballs are of no further use (the downloaded packages are).
find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$KEY" ! -name debs -exec rm -rf {} +
log "base images ready (key $KEY)"
