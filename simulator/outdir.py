"""Output folders that never mix two runs.

A report that shows files of an earlier run next to this one's is wrong in a
way nobody notices, so a folder that already holds files is refused unless the
caller asked to replace them (`--force`); then the old files go first.
"""

from __future__ import annotations

import shutil
from pathlib import Path


class OutDirError(ValueError):
    """An `--out` that cannot be used as it is; the message says what to do."""


def fresh_out_dir(out: Path, force: bool = False) -> Path:
    """Create `out` empty; refuse a file, or a folder with files in it unless `force`."""
    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out {out} is a file; give a folder (it is created if missing)")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutDirError(
                f"--out {out} already holds files of another run; choose a new folder, "
                "or add --force to delete them first"
            )
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out
