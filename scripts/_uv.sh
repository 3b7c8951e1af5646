# Sourced by the other scripts: puts the pinned uv at $UV (installing it with pip into
# .tools/uv on first use), so the machine needs nothing but Python 3.11.
UV_VERSION=0.13.9  # keep equal to [tool.uv] required-version in pyproject.toml
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
UV=.tools/uv/bin/uv
if [ ! -x "$UV" ] || [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    rm -rf .tools/uv
    "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target .tools/uv "uv==$UV_VERSION"
fi
export UV_PYTHON="$PY"         # the machine's Python, never one uv would download
export UV_PYTHON_DOWNLOADS=never
