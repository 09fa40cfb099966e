#!/usr/bin/env bash
# Idempotent setup of everything edgeflow's integration tests need, without pulling any
# image from a registry:
#
#   * Debian packages: debootstrap, mosquitto and mosquitto-clients (a native broker for
#     the throughput bench, mosquitto_pub in tests), openssl
#     (test certificates), and the
#     build dependencies of librdkafka (rdkafka's bundled build) and tansu;
#   * the Kafka-compatible broker tansu, built with `cargo install` into $CACHE/tansu;
#   * edgeflow/debian-base:bookworm, a debootstrapped Debian bookworm minbase rootfs
#     (with mosquitto) imported into Docker; the rootfs tarball is cached in $CACHE so a
#     `docker system prune` is quick to recover from;
#   * edgeflow/mosquitto:local and edgeflow/tansu:local, built from docker/ on that base;
#   * a throwaway PostgreSQL cluster (Debian's server) on 127.0.0.1:55432 for the sink
#     tests, the psql client the tests run, and pyarrow (PyPI) to read Parquet back;
#   * clients of the processor's PostgreSQL wire: Debian's JDBC driver with a JDK, and
#     psycopg (PyPI).
#
# Cache: ${EDGEFLOW_CACHE:-$HOME/.cache/edgeflow}. A warm run takes a second or two.
#
# Usage:
#   scripts/test-env.sh           # set up, then print `export VAR=...` lines
#   source scripts/test-env.sh    # set up and export the variables into this shell
#
# Variables read by the test harness (tests/common/mod.rs):
#   EDGEFLOW_MQTT_IMAGE=edgeflow/mosquitto:local
#   EDGEFLOW_KAFKA_IMAGE=edgeflow/tansu:local
#   EDGEFLOW_KAFKA_FLAVOR=tansu
#   EDGEFLOW_POSTGRES_URL=postgres://edgeflow@127.0.0.1:55432/postgres
#
# Fails (non-zero, with a message saying what is missing) if anything cannot be had.

_edgeflow_test_env() (
    set -euo pipefail

    local repo cache
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cache="${EDGEFLOW_CACHE:-$HOME/.cache/edgeflow}"
    mkdir -p "$cache"

    # Pinned so that every machine runs the same broker; bump deliberately.
    local tansu_version="${EDGEFLOW_TANSU_VERSION:-0.6.0}"
    local tansu_features="dynostore,libsql"
    local suite="bookworm"
    # The Debian mirror for debootstrap: EDGEFLOW_DEBIAN_MIRROR if set, else the one this
    # machine's apt already uses (see debian_mirror below).
    local mirror="${EDGEFLOW_DEBIAN_MIRROR:-}"
    # Packages inside the image rootfs: mosquitto for the MQTT image; ca-certificates
    # (which brings libssl3) and what `ldd tansu` lists beyond minbase for tansu.
    local rootfs_packages="mosquitto,ca-certificates"
    # Packages on the host.
    local host_packages=(
        debootstrap mosquitto-clients openssl
        # a native broker for the end-to-end throughput bench (benches/agent_throughput.rs)
        mosquitto
        # PostgreSQL: the server behind the sink tests, and the real psql client
        postgresql postgresql-client
        # a JDK and Debian's PostgreSQL JDBC driver: the processor test makes JDBC's
        # metadata calls (what schema browsers call) over the PostgreSQL wire
        default-jdk-headless libpostgresql-jdbc-java
        # librdkafka (rdkafka-sys: cmake build, ssl, zstd) and tansu
        build-essential cmake pkg-config libssl-dev zlib1g-dev libzstd-dev
        libcurl4-openssl-dev libsasl2-dev protobuf-compiler
    )

    log() { printf 'test-env: %s\n' "$*" >&2; }
    die() {
        printf '\ntest-env: ERROR: %s\n\n' "$*" >&2
        exit 1
    }
    # Docker >= 23 clients default to BuildKit, which needs the buildx plugin.
    docker_build() {
        if docker buildx version >/dev/null 2>&1; then
            docker build "$@"
        else
            DOCKER_BUILDKIT=0 docker build "$@"
        fi
    }
    # debian_mirror SUITE: the archive URI apt is configured with for SUITE (or, on a host
    # of another release, for its main suite: every Debian mirror carries every suite).
    debian_mirror() {
        local targets
        targets="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | sort -u)" || true
        awk -v suite="$1" '$2 == suite { print $1; found = 1; exit } END { if (!found) exit 1 }' <<<"$targets" ||
            awk '$2 !~ /-/ && $1 ~ /debian\/?$/ { print $1; exit }' <<<"$targets"
    }
    image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
    image_label() {
        docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
    }

    # ---------------------------------------------------------------- docker
    command -v docker >/dev/null ||
        die "the docker CLI is not installed. Install Docker (e.g. apt-get install docker.io) and start the daemon."
    local info
    info="$(docker info 2>&1)" ||
        die "the Docker daemon is not reachable: $(printf '%s\n' "$info" | grep -iE 'cannot|error|denied' | head -n 1)
  Start it (e.g. 'systemctl start docker' or 'dockerd &') and check DOCKER_HOST and that $(id -un) may use /var/run/docker.sock."

    # ---------------------------------------------------------------- apt
    local missing=() pkg
    for pkg in "${host_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]}"
        local sudo=()
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${missing[*]}"
            sudo=(sudo)
        fi
        # Unreachable third-party apt sources only produce warnings here; a real failure
        # shows up in apt-get install below.
        "${sudo[@]}" apt-get update -qq || log "apt-get update reported errors (continuing)"
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
            die "apt-get install ${missing[*]} failed"
    fi

    # ---------------------------------------------------------------- tansu binary
    local tansu_root="$cache/tansu"
    local tansu_bin="$tansu_root/bin/tansu"
    if [[ ! -x $tansu_bin ]] || ! grep -qs "\"tansu $tansu_version " "$tansu_root/.crates2.json"; then
        command -v cargo >/dev/null || die "cargo is not installed (needed to build tansu); install Rust via rustup"
        log "building tansu $tansu_version into $tansu_root (takes 10+ minutes once)"
        cargo install tansu --version "$tansu_version" --locked --features "$tansu_features" \
            --root "$tansu_root" >&2 ||
            die "cargo install tansu failed (see the output above)"
    fi
    [[ -x $tansu_bin ]] || die "tansu binary missing at $tansu_bin after cargo install"

    # ---------------------------------------------------------------- base image
    local base_image="edgeflow/debian-base:$suite"
    local base_key
    base_key="$(printf '%s|%s|%s' "$suite" "minbase" "$rootfs_packages" | sha256sum | cut -c1-12)"
    local rootfs_tar="$cache/images/debian-$suite-minbase-$base_key.tar"
    if [[ $(image_label "$base_image" edgeflow.inputs) != "$base_key" ]]; then
        if [[ ! -s $rootfs_tar ]]; then
            [[ $(id -u) -eq 0 ]] || die "debootstrap needs root; run scripts/test-env.sh as root once (or via sudo)"
            if [[ -z $mirror ]]; then
                mirror="$(debian_mirror "$suite")" ||
                    die "no Debian archive found in this machine's apt sources; set EDGEFLOW_DEBIAN_MIRROR to a Debian mirror URL"
            fi
            log "debootstrapping Debian $suite minbase (+$rootfs_packages) from $mirror; takes a few minutes once"
            mkdir -p "$cache/images"
            local rootfs
            rootfs="$(mktemp -d "$cache/images/rootfs.XXXXXX")"
            # shellcheck disable=SC2064
            trap "rm -rf '$rootfs'" EXIT
            if ! debootstrap --variant=minbase --include="$rootfs_packages" "$suite" "$rootfs" "$mirror" \
                >"$cache/images/debootstrap.log" 2>&1; then
                tail -n 20 "$cache/images/debootstrap.log" >&2
                die "debootstrap $suite from $mirror failed (log: $cache/images/debootstrap.log)"
            fi
            # Slim it down: apt caches, docs and man pages are useless in a test image.
            rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
                "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
                "$rootfs"/var/log/*.log "$rootfs"/debootstrap
            tar --numeric-owner -C "$rootfs" -cf "$rootfs_tar.tmp" . || die "tar of the rootfs failed"
            mv "$rootfs_tar.tmp" "$rootfs_tar"
            rm -rf "$rootfs"
            trap - EXIT
        fi
        log "importing $rootfs_tar as $base_image"
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change "LABEL edgeflow.inputs=$base_key" \
            "$rootfs_tar" "$base_image" >/dev/null ||
            die "docker import of $rootfs_tar failed"
    fi
    local base_id
    base_id="$(docker image inspect -f '{{.Id}}' "$base_image")"

    # ---------------------------------------------------------------- local images
    # build_image TAG CONTEXT_DIR: rebuilds only when the context or the base changed
    # (recorded in the edgeflow.inputs label), so a warm run does not even call docker build.
    build_image() {
        local tag=$1 context=$2 key
        key="$( (
            echo "$base_id"
            cd "$context" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        ) | sha256sum | cut -c1-16)"
        if [[ $(image_label "$tag" edgeflow.inputs) == "$key" ]]; then
            return 0
        fi
        log "building $tag"
        local out
        if ! out="$(docker_build --label "edgeflow.inputs=$key" -t "$tag" "$context" 2>&1)"; then
            printf '%s\n' "$out" >&2
            die "docker build of $tag from $context failed"
        fi
        rebuilt+=("$tag")
    }
    local rebuilt=()

    build_image edgeflow/mosquitto:local "$repo/docker/mosquitto"

    # The tansu binary lives outside the repo; assemble a build context in the cache
    # (hard link when possible, so no 100 MB copy).
    local tansu_ctx="$cache/docker-context/tansu"
    mkdir -p "$tansu_ctx"
    cp "$repo/docker/tansu/Dockerfile" "$tansu_ctx/Dockerfile"
    if ! cmp -s "$tansu_bin" "$tansu_ctx/tansu"; then
        rm -f "$tansu_ctx/tansu"
        ln "$tansu_bin" "$tansu_ctx/tansu" 2>/dev/null || cp "$tansu_bin" "$tansu_ctx/tansu"
    fi
    build_image edgeflow/tansu:local "$tansu_ctx"

    # PostgreSQL for the sink tests: Debian's server, a private throwaway cluster on a
    # fixed local port (trust authentication, loopback only, no fsync: test data only).
    local pg_bin pgport="${EDGEFLOW_PG_PORT:-55432}"
    local pgdata="${TMPDIR:-/tmp}/edgeflow-pg-$pgport"
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    [[ -n $pg_bin && -x $pg_bin/initdb ]] || die "PostgreSQL server binaries not found; apt-get install postgresql"
    local as_pg=()
    if [[ $(id -u) == 0 ]]; then as_pg=(runuser -u postgres --); fi
    if [[ ! -f $pgdata/PG_VERSION ]]; then
        rm -rf "$pgdata"
        mkdir -p "$pgdata"
        if [[ ${#as_pg[@]} -gt 0 ]]; then chown postgres:postgres "$pgdata"; fi
        "${as_pg[@]}" "$pg_bin/initdb" -D "$pgdata" -A trust -U edgeflow >"$pgdata.initdb.log" 2>&1 ||
            die "initdb failed: $(tail -5 "$pgdata.initdb.log")"
    fi
    if ! "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
        log "starting PostgreSQL on 127.0.0.1:$pgport"
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
            -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" \
            start >/dev/null || die "PostgreSQL did not start: $(tail -5 "$pgdata/server.log")"
    fi

    # pyarrow: an independent Parquet reader for the sink tests.
    if ! python3 -c 'import pyarrow.parquet' >/dev/null 2>&1; then
        log "installing pyarrow (PyPI) for reading Parquet back in tests"
        python3 -m pip install --quiet --disable-pip-version-check pyarrow >&2 ||
            die "pip install pyarrow failed"
    fi

    # psycopg: the PostgreSQL driver for Python, a client of the processor's catalog.
    if ! python3 -c 'import psycopg' >/dev/null 2>&1; then
        log "installing psycopg (PyPI) for the processor's PostgreSQL-wire tests"
        python3 -m pip install --quiet --disable-pip-version-check "psycopg[binary]" >&2 ||
            die "pip install psycopg failed"
    fi

    # Smoke-check freshly built images (e.g. a shared library missing from the rootfs).
    local tag out
    for tag in "${rebuilt[@]}"; do
        case $tag in
        edgeflow/tansu:*)
            out="$(docker run --rm "$tag" --version 2>&1)" ||
                die "$tag does not run: $out. Add the missing library to rootfs_packages in scripts/test-env.sh."
            ;;
        edgeflow/mosquitto:*)
            # `mosquitto -h` exits non-zero by design; only its banner matters.
            out="$(docker run --rm "$tag" mosquitto -h 2>&1 || true)"
            [[ $out == *"mosquitto version"* ]] || die "$tag does not run mosquitto: $out"
            ;;
        esac
    done
)

if _edgeflow_test_env; then
    unset -f _edgeflow_test_env
    export EDGEFLOW_MQTT_IMAGE=edgeflow/mosquitto:local
    export EDGEFLOW_KAFKA_IMAGE=edgeflow/tansu:local
    export EDGEFLOW_KAFKA_FLAVOR=tansu
    export EDGEFLOW_POSTGRES_URL="postgres://edgeflow@127.0.0.1:${EDGEFLOW_PG_PORT:-55432}/postgres"
    if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
        echo "export EDGEFLOW_POSTGRES_URL=$EDGEFLOW_POSTGRES_URL"
        echo "export EDGEFLOW_MQTT_IMAGE=$EDGEFLOW_MQTT_IMAGE"
        echo "export EDGEFLOW_KAFKA_IMAGE=$EDGEFLOW_KAFKA_IMAGE"
        echo "export EDGEFLOW_KAFKA_FLAVOR=$EDGEFLOW_KAFKA_FLAVOR"
    fi
else
    unset -f _edgeflow_test_env
    echo "test-env: setup failed; the integration tests cannot run" >&2
    # `return` when sourced, `exit` when run.
    return 1 2>/dev/null || exit 1
fi
