"""The folder `p11spy replay --lib` hands a client: the replay module, its script beside it
(where the module looks for it, so a client needs no environment), and the replay's traces.

Why a copy of the module per folder: the module finds its script beside itself (dladdr), and
one process may load two replays; the dynamic loader would load one file only once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from p11spy.errors import UserError

SCRIPT = "replay.p11r"


def _ours(path: Path) -> None:
    """path must be a folder of this user that no one else may write in."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise UserError(f"{path}: not a folder of ours that only we may write in")


def default_folder(trace: Path, script: bytes) -> Path:
    """/tmp/p11spy-<uid>/replay-<trace name>-<script digest>: the same trace, the same folder."""
    base = Path(f"/tmp/p11spy-{os.geteuid()}")
    base.mkdir(mode=0o700, exist_ok=True)
    _ours(base)
    digest = hashlib.sha256(script).hexdigest()[:10]
    return base / f"replay-{trace.stem}-{digest}"


def make(folder: Path, module: Path, script: bytes) -> Path:
    """Fills the folder (made 0700 if new) and returns the module's path in it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _ours(folder)
    target = folder / module.name
    for name, write in ((SCRIPT, lambda p: p.write_bytes(script)),
                        (module.name, lambda p: shutil.copyfile(module, p))):
        tmp = folder / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
        os.close(fd)
        write(tmp)
        tmp.replace(folder / name)
    return target
