#!/usr/bin/env bash
# tox, with every CPython 3.10-3.13 that pyenv has handed to it (--discover): on these
# machines only 3.11 is on PATH, so py310/py312/py313 would not resolve otherwise.
#
#   ci/tox_matrix.sh                                  every env of env_list, one after another
#   ci/tox_matrix.sh -p -e py311-full,py312-minimal   a subset, in parallel
#   ci/tox_matrix.sh -e docker                        the Docker matrix
#
# Arguments go to `tox run` (or `tox run-parallel` with -p). tox comes from $TOX, else
# PATH, else a venv this script makes under ${SAGE_CI_CACHE:-~/.cache/sage-ci}.
set -euo pipefail
cd "$(dirname "$0")/.."

MIN_TOX=4.40  # keep in step with tox.ini's `requires`
CACHE_DIR=${SAGE_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sage-ci}

tox_ok() {  # is "$@" a tox that is new enough?
    "$@" --version 2>/dev/null | awk -v min="$MIN_TOX" '
        { split($1, v, "."); split(min, m, ".")
          ok = (v[1] > m[1]) || (v[1] == m[1] && v[2] >= m[2]) }
        END { exit !ok }'
}

if [ -n "${TOX:-}" ]; then
    read -r -a tox <<<"$TOX"
elif command -v tox >/dev/null && tox_ok tox; then
    tox=(tox)
else
    venv=$CACHE_DIR/tox-venv
    if ! tox_ok "$venv/bin/tox"; then
        echo "tox_matrix: installing tox>=$MIN_TOX into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "tox>=$MIN_TOX"
    fi
    tox=("$venv/bin/tox")
fi

discover=()
if command -v pyenv >/dev/null; then
    installed=$(pyenv versions --bare 2>/dev/null || true)
    for minor in 3.10 3.11 3.12 3.13; do
        # the newest patch release of that minor version, e.g. 3.12.1
        version=$(grep -E "^${minor//./\\.}\.[0-9]+$" <<<"$installed" | sort -V | tail -n 1 || true)
        [ -n "$version" ] || continue
        if exe=$(PYENV_VERSION=$version pyenv which "python$minor" 2>/dev/null); then
            discover+=("$exe")
        fi
    done
fi

mode=run
args=()
while [ $# -gt 0 ]; do  # -p / --parallel [N|auto|all] picks `tox run-parallel`
    case "$1" in
        -p|--parallel)
            mode=run-parallel
            if [[ ${2:-} =~ ^([0-9]+|auto|all)$ ]]; then args+=(--parallel "$2"); shift; fi ;;
        --) args+=("$@"); break ;;
        *) args+=("$1") ;;
    esac
    shift
done
if [ "$mode" = run-parallel ]; then
    # envs side by side, each with `pytest -n auto`, would put 2 x cores workers on the
    # cores, and the timing-sensitive fault tests then miss their deadlines: one each
    export PYTEST_XDIST_AUTO_NUM_WORKERS=${PYTEST_XDIST_AUTO_NUM_WORKERS:-1}
fi
if [ ${#discover[@]} -gt 0 ]; then
    echo "tox_matrix: interpreters from pyenv: ${discover[*]}" >&2
    exec "${tox[@]}" "$mode" --discover "${discover[@]}" "${args[@]}"
fi
exec "${tox[@]}" "$mode" "${args[@]}"
