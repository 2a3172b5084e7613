"""`make demo`: a client traced on a SoftHSM2 token the demo makes itself, then the trace decoded.

pkcs11-tool logs in with a wrong PIN, then with the right one and lists the token's objects, all
through the p11spy shim. The decoded trace shows the failing C_Login with its masked PIN and
CKR_PIN_INCORRECT, and the calls that followed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def sh(cmd: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    print("$ " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, env=env, text=True, capture_output=True)
    sys.stdout.write(res.stdout)
    sys.stdout.write(res.stderr)
    if check and res.returncode:
        raise SystemExit(f"demo: {cmd[0]} failed with status {res.returncode}")
    return res


def main() -> int:
    p11spy = str(Path(sys.executable).parent / "p11spy")
    shim = subprocess.run([p11spy, "lib", "--module", SOFTHSM], check=True, capture_output=True,
                          text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="p11spy-demo-") as tmp:
        root = Path(tmp)
        (root / "tokens").mkdir()
        conf = root / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
        env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
        sh(["softhsm2-util", "--init-token", "--free", "--label", "demo", "--pin", "1234",
            "--so-pin", "5678"], env)
        trace = root / "trace-%p.p11"
        spy = {**env, "P11SPY_MODULE": SOFTHSM, "P11SPY_OUTPUT": str(trace)}
        print("\n# A client with a wrong PIN, through the shim:")
        sh(["pkcs11-tool", "--module", shim, "--token-label", "demo", "--login", "--pin", "0000",
            "--list-objects"], spy, check=False)
        print("\n# The same client with the right PIN:")
        sh(["pkcs11-tool", "--module", shim, "--token-label", "demo", "--login", "--pin", "1234",
            "--list-objects"], spy)
        traces = sorted(root.glob("trace-*.p11"))
        print(f"\n# The traces ({len(traces)} files), decoded; the failed calls first:")
        sh([p11spy, "decode", "--errors", *map(str, traces)], env)
        print("\n# Every call of the first run:")
        sh([p11spy, "decode", str(traces[0])], env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
