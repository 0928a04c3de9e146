#!/usr/bin/env bash
# Development entry point for bayesgmm.
#
#   bash scripts/dev.sh setup             create or refresh .venv (package + test and dev extras)
#   bash scripts/dev.sh demo [args...]    run `bayesgmm demo --quick [args...]` from .venv
#   bash scripts/dev.sh test [args...]    run `python -m pytest -n 2 -q [args...]` from .venv
#   bash scripts/dev.sh lint              run `ruff check` and `ruff format --check` from .venv
#   bash scripts/dev.sh find-python       print the interpreter a new .venv would be made with
#
# It finds a Python >= 3.12 by itself, in this order:
#   1. $BAYESGMM_PYTHON, if set (an error if it is not a usable Python >= 3.12);
#   2. python3.13, python3.12, python3 on PATH, each only if it runs and reports >= 3.12;
#   3. pyenv: the newest installed 3.12.x / 3.13.x, through `PYENV_VERSION=<v> pyenv exec python`
#      or else the interpreter at $(pyenv root)/versions/<v>/bin/python; when the pyenv command
#      is not on PATH (a non-interactive shell), ${PYENV_ROOT:-~/.pyenv}/versions is searched.
# The virtual environment lives in .venv at the repository root and is reused while it is
# healthy. pip runs only when pyproject.toml (or the set of packages) changed since the last
# install, or when a larger set of extras is needed, so a second run starts at once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
STAMP="$VENV/.bayesgmm-install"

log() { printf 'dev.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Prints sys.executable if the interpreter runs, is >= 3.12 and can create a venv with pip
# (Debian's python3 without python3-venv lacks ensurepip).
PROBE='import sys
if sys.version_info < (3, 12):
    sys.exit(1)
import ensurepip, venv
print(sys.executable)'

# probe CMD [ARGS...]: print the interpreter's real path, or fail quietly.
probe() {
    local out
    out="$("$@" -c "$PROBE" 2>/dev/null </dev/null)" || return 1
    out="${out##*$'\n'}"
    [[ -n "$out" && -x "$out" ]] || return 1
    printf '%s\n' "$out"
}

# pyenv_versions_newest_first ROOT: installed CPython 3.12.x / 3.13.x versions, newest first.
pyenv_versions_newest_first() {
    local listing
    if command -v pyenv >/dev/null 2>&1; then
        listing="$(pyenv versions --bare 2>/dev/null || true)"
    else
        listing="$(ls -1 "$1/versions" 2>/dev/null || true)"
    fi
    printf '%s\n' "$listing" | grep -E '^3\.1[23]\.[0-9]+$' | sort -t. -k1,1nr -k2,2nr -k3,3nr || true
}

find_python() {
    local cand exe v root
    if [[ -n "${BAYESGMM_PYTHON:-}" ]]; then
        exe="$(probe "$BAYESGMM_PYTHON")" ||
            die "BAYESGMM_PYTHON=$BAYESGMM_PYTHON is not a working Python >= 3.12 with venv"
        printf '%s\n' "$exe"
        return 0
    fi
    for cand in python3.13 python3.12 python3; do
        command -v "$cand" >/dev/null 2>&1 || continue
        if exe="$(probe "$cand")"; then
            printf '%s\n' "$exe"
            return 0
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root 2>/dev/null || true)"
    fi
    root="${root:-${PYENV_ROOT:-$HOME/.pyenv}}"
    for v in $(pyenv_versions_newest_first "$root"); do
        if command -v pyenv >/dev/null 2>&1 &&
            exe="$(probe env PYENV_VERSION="$v" pyenv exec python)"; then
            printf '%s\n' "$exe"
            return 0
        fi
        if exe="$(probe "$root/versions/$v/bin/python")"; then
            printf '%s\n' "$exe"
            return 0
        fi
    done
    die "no Python >= 3.12 found (tried python3.13, python3.12, python3 and pyenv).
    Install Python 3.12 or newer, or point BAYESGMM_PYTHON at one."
}

# The install fingerprint: pyproject.toml plus the list of packages (a new subpackage or a
# package __init__.py that appears later needs a fresh editable install).
fingerprint() {
    "$VPY" - "$ROOT" <<'EOF'
import hashlib, pathlib, sys
root = pathlib.Path(sys.argv[1])
h = hashlib.sha256((root / "pyproject.toml").read_bytes())
for path in sorted(root.glob("bayesgmm/**/__init__.py")):
    h.update(path.relative_to(root).as_posix().encode() + b"\0")
print(h.hexdigest())
EOF
}

venv_healthy() {
    [[ -x "$VPY" ]] &&
        "$VPY" -c 'import sys; assert sys.version_info >= (3, 12); import pip' >/dev/null 2>&1
}

stamp_field() { # stamp_field NAME: the value of NAME=... in the stamp, or nothing
    [[ -f "$STAMP" ]] && sed -n "s/^$1=//p" "$STAMP" || true
}

# ensure_venv LEVEL: 0 = the package, 1 = with [test], 2 = with [dev].
ensure_venv() {
    local level="$1" spec py fp old_root old_level fresh=""

    old_root="$(stamp_field root)"
    if [[ -d "$VENV" ]] && ! venv_healthy; then
        log "the existing .venv is broken or too old; recreating it"
        rm -rf "$VENV"
    elif [[ -n "$old_root" && "$old_root" != "$ROOT" ]]; then
        log ".venv was made for $old_root (venvs cannot move); recreating it"
        rm -rf "$VENV"
    fi
    if [[ ! -d "$VENV" ]]; then
        py="$(find_python)"
        log "creating .venv with $py ($("$py" -c 'import platform; print(platform.python_version())'))"
        "$py" -m venv "$VENV" || die "could not create $VENV with $py"
        fresh=" (a first install downloads JAX and friends; this takes a minute or two)"
    fi

    fp="$(fingerprint)"
    old_level="$(stamp_field level)"
    if [[ "$(stamp_field hash)" == "$fp" && "$old_level" -ge "$level" ]]; then
        return 0
    fi
    # Never drop extras that an earlier run installed (setup, then test, then setup again).
    [[ "$old_level" =~ ^[0-2]$ && "$old_level" -gt "$level" ]] && level="$old_level"
    case "$level" in
    0) spec="." ;;
    1) spec=".[test]" ;;
    *) spec=".[dev]" ;;
    esac
    log "installing bayesgmm ($spec) into .venv$fresh"
    rm -f "$STAMP"
    (cd "$ROOT" && "$VPY" -m pip install -qq --disable-pip-version-check \
        --root-user-action=ignore --editable "$spec") || die "pip install -e '$spec' failed (see above)"
    printf 'root=%s\nhash=%s\nlevel=%s\n' "$ROOT" "$fp" "$level" >"$STAMP"
}

main() {
    local cmd="${1:-help}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
    setup)
        ensure_venv 2
        log "ready: $("$VPY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
        ;;
    demo)
        ensure_venv 0
        exec "$VENV/bin/bayesgmm" demo --quick "$@"
        ;;
    test)
        ensure_venv 1
        cd "$ROOT"
        exec "$VPY" -m pytest -n 2 -q "$@"
        ;;
    lint)
        ensure_venv 2
        cd "$ROOT"
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        ;;
    find-python)
        find_python
        ;;
    -h | --help | help)
        usage
        ;;
    *)
        usage >&2
        die "unknown command '$cmd'"
        ;;
    esac
}

main "$@"
