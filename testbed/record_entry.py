"""Records fixtures/p11spy/real-thread-crashed-in-module.p11: `python -m testbed.record_entry
[DIR]` (after `make setup`).

Why: a real trace with entry records (facts/LOGFORMAT.md), of a call that never returned. The
client (tests/shim_c/inside.c, mode crash) goes through this machine's shim to a fresh
SoftHSM2 token; its second thread calls C_GenerateRandom with an output pointer to nowhere and
SoftHSM2 dies of SIGSEGV writing to it, so the trace ends with that call's entry record.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
NAME = "real-thread-crashed-in-module.p11"


def record(dest: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="p11spy-entry-") as tmp:
        work = Path(tmp)
        (work / "tokens").mkdir()
        conf = work / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {work / 'tokens'}\nobjectstore.backend = file\n"
                        "log.level = ERROR\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("P11SPY_", "PKCS11SPY"))}
        env.update(SOFTHSM2_CONF=str(conf), P11SPY_MODULE=SOFTHSM,
                   P11SPY_OUTPUT=str(work / NAME))
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "entry", "--pin",
                        "1234", "--so-pin", "5678"], check=True, capture_output=True, env=env)
        exe = work / "inside"
        subprocess.run(["gcc", "-O1", "-Wall", "-I/usr/include/p11-kit-1", "-o", str(exe),
                        str(ROOT / "tests" / "shim_c" / "inside.c"), "-ldl", "-lpthread"],
                       check=True)
        done = subprocess.run([str(exe), str(ROOT / "spy" / "libp11spy.so"), "1234", "crash"],
                              env=env, capture_output=True, text=True, timeout=60)
        if done.returncode != -signal.SIGSEGV:
            raise SystemExit(f"the client did not crash ({done.returncode}): {done.stderr}")
        shutil.copyfile(work / NAME, dest / NAME)
    return dest / NAME


def main() -> int:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fixtures" / "p11spy"
    print(f"wrote {record(dest)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
