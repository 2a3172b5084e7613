"""`make demo`: the main job on the card station. A client fails to log in to a smart card; p11spy
shows which call failed, what went over the wire under it, and what the codes mean.

It starts pcscd with a virtual reader and the virtual PIV card (testbed/card_station.py), runs
pkcs11-tool under `p11spy run` with a wrong PIN and then the right one (no client configuration
touched), and shows the traces: in the viewer (`p11spy show`) when it runs in a terminal, else
printed with `p11spy decode` (CI has no terminal; nothing here waits for a key). The traces are
kept for the reader to open again; the demo says where.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from testbed.card_station import StationError, card_station

P11SPY = str(Path(sys.executable).parent / "p11spy")
WRONG_PIN = "975312"


def sh(cmd: list[str], env: dict[str, str] | None = None, check: bool = True
       ) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, env=env, text=True, capture_output=True, stdin=subprocess.DEVNULL)
    sys.stdout.write(res.stdout)
    sys.stdout.write(res.stderr)
    sys.stdout.flush()
    if check and res.returncode:
        raise SystemExit(f"demo: {cmd[0]} failed with status {res.returncode}")
    return res


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("CI") is None


def main() -> int:
    out = Path(tempfile.mkdtemp(prefix="p11spy-demo-"))
    os.chmod(out, 0o700)
    print("# Starting pcscd with a virtual reader, and a virtual PIV card in it (PIN 123456)")
    try:
        with card_station(out / "station") as card:
            print(f"# Reader: {card.reader}\n")
            tool = ["pkcs11-tool", "--module", card.module]
            print("# 1. The client logs in with a wrong PIN, under p11spy run:")
            sh([P11SPY, "run", "-o", str(out / "1-wrong-pin-%p.p11"), "--", *tool,
                "--login", "--pin", WRONG_PIN, "--list-objects"], card.env, check=False)
            print("\n# 2. The same client with the right PIN:")
            sh([P11SPY, "run", "-o", str(out / "2-right-pin-%p.p11"), "--", *tool,
                "--login", "--pin", card.pin, "--list-objects"], card.env)
    except StationError as exc:
        raise SystemExit(f"demo: the card station did not start: {exc}") from exc
    wrong = sorted(out.glob("1-wrong-pin-*.p11"))
    traces = sorted(out.glob("*.p11"))
    if not wrong:
        raise SystemExit("demo: the first run left no trace")
    print("\n# 3. What failed, and the APDUs under it (p11spy decode --errors):")
    sh([P11SPY, "decode", "--errors", *map(str, wrong)])
    print("\n# 4. What the codes mean:")
    sh([P11SPY, "explain", "CKR_PIN_INCORRECT", "63C2"])
    print("\n# 5. What went wrong, read as an expert would (p11spy diagnose):")
    sh([P11SPY, "diagnose", *map(str, wrong)], check=False)
    if interactive():
        print(f"\n# Opening the viewer on {' '.join(map(str, traces))}: press e for the "
              "failed call, ? for help, q to quit.", flush=True)
        subprocess.run([P11SPY, "show", *map(str, traces)])
    else:
        print("\n# Every call of the failed run (in a terminal, the demo opens "
              "`p11spy show` instead):")
        sh([P11SPY, "decode", *map(str, wrong)])
    print(f"\n# The traces are kept in {out}: p11spy show {out}/*.p11")
    return 0


if __name__ == "__main__":
    sys.exit(main())
