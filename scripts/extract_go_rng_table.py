#!/usr/bin/env python3
"""Regenerate simulator/data/go_rng_cooked.txt from a local Go toolchain's source.

The FGD artifact seeds Go's math/rand; replaying it bit for bit needs Go's
607-entry `rngCooked` table (Go's source, BSD-3-Clause). Run:
    python3 scripts/extract_go_rng_table.py [path/to/go/src/math/rand/rng.go]
"""

import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "simulator" / "data" / "go_rng_cooked.txt"
HEADER = """\
# rngCooked from the Go standard library, src/math/rand/rng.go.
# Copyright 2009 The Go Authors. All rights reserved.
# Use of this source code is governed by a BSD-style license (BSD-3-Clause):
# https://go.dev/LICENSE . One signed int64 per line, 607 lines.
"""


def main() -> None:
    if len(sys.argv) > 1:
        source = Path(sys.argv[1])
    else:
        goroot = subprocess.run(["go", "env", "GOROOT"], capture_output=True, text=True, check=True)
        source = Path(goroot.stdout.strip()) / "src" / "math" / "rand" / "rng.go"
    text = source.read_text()
    body = text[text.index("rngCooked [rngLen]int64 = [...]int64{") :]
    body = body[: body.index("}")]
    values = [int(v) for v in re.findall(r"-?\d+", body.split("{", 1)[1])]
    if len(values) != 607:
        raise SystemExit(f"expected 607 values in {source}, found {len(values)}")
    OUT.write_text(HEADER + "\n".join(str(v) for v in values) + "\n")
    print(f"wrote {OUT} ({len(values)} values from {source})")


if __name__ == "__main__":
    main()
