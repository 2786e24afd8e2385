#!/bin/sh
# Installs the Python, JavaScript and C policy toolchains into a
# project-local directory (default: .tools at the repository root), pinned by
# the files beside this script:
#   <tools>/python-venv   componentize-py, and ziglang: Zig's clang and a
#                         WASI libc for C policies (requirements.txt)
#   <tools>/npm           componentize-qjs, componentize-js, esbuild
#                         (package.json + package-lock.json)
# Nothing is installed globally. A part whose pins have not changed since it
# was installed is left alone, so a second run takes milliseconds; parallel
# runs are serialised by a lock file.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
tools=${1:-$here/../../.tools}
mkdir -p "$tools"
tools=$(cd "$tools" && pwd)

exec 9>"$tools/.install.lock"
flock 9

# --- Python: componentize-py and Zig in a virtual environment --------------
py_stamp=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$tools/python-venv/.installed" 2>/dev/null || true)" != "$py_stamp" ]; then
    echo "installing the Python policy toolchain into $tools/python-venv" >&2
    rm -rf "$tools/python-venv"
    python3 -m venv "$tools/python-venv"
    "$tools/python-venv/bin/pip" install --quiet --disable-pip-version-check \
        --no-input -r "$here/requirements.txt"
    echo "$py_stamp" > "$tools/python-venv/.installed"
fi

# --- JavaScript: exact versions from the committed lock file ---------------
js_stamp=$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$tools/npm/.installed" 2>/dev/null || true)" != "$js_stamp" ]; then
    echo "installing the JavaScript policy toolchain into $tools/npm" >&2
    rm -rf "$tools/npm"
    mkdir -p "$tools/npm"
    cp "$here/package.json" "$here/package-lock.json" "$tools/npm/"
    # `npm install` on a copy of the lock installs its exact versions.
    # (`npm ci` refuses this lock: it lists platform packages that the
    # registry does not have for every platform.) No install scripts: every
    # tool here ships its native binary as a platform package.
    (cd "$tools/npm" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "$js_stamp" > "$tools/npm/.installed"
fi
