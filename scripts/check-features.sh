#!/usr/bin/env bash
# Checks that `cargo bench` resolves every crate the release binaries build with the same
# features as `cargo build --release -p edgeflow -p edgeflow-edge` does. When they differ
# (a dev-dependency turning on one more feature of serde or tokio is enough), the bench
# build recompiles most of the tree, DataFusion included, instead of reusing the release
# build. The fix is in the root Cargo.toml: turn the feature on in the block marked
# "Build time only".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One line per crate and feature set: "name version|feature,feature".
features() {
    cargo tree --locked --prefix none -f '{p}|{f}' "$@" \
        | sed -E 's/ \(\*\)$//; s/^([^ ]+ v[^ |]+)[^|]*\|/\1|/' | sort -u
}
release="$(features -p edgeflow -p edgeflow-edge -e normal,build)"
bench="$(features -p edgeflow -e normal,build,dev)"

# Only crates both builds compile matter; a crate only the benches use is built once anyway.
drift="$(join -t '|' -j 1 \
    <(cut -d'|' -f1 <<<"$release" | sort -u) \
    <(cut -d'|' -f1 <<<"$bench" | sort -u) \
    | while read -r crate; do
        r="$(grep -F "$crate|" <<<"$release" | cut -d'|' -f2 | sort | paste -sd' ')"
        b="$(grep -F "$crate|" <<<"$bench" | cut -d'|' -f2 | sort | paste -sd' ')"
        [[ $r == "$b" ]] || printf '  %s\n    release: %s\n    bench:   %s\n' "$crate" "$r" "$b"
    done)"
if [[ -n $drift ]]; then
    echo "check-features: the bench build would recompile crates the release build has:" >&2
    echo "$drift" >&2
    exit 1
fi
echo "check-features: release and bench builds share their feature sets"
