"""Records the real card traces under fixtures/: `python -m testbed.record_fixtures [ROOT]`.

Why: the readers must be tested on what OpenSC, pkcs11-spy and p11spy really write when a card
answers (APDU dumps, VERIFY, 63Cx, GENERAL AUTHENTICATE chains), not only on logs without a
card. Each scenario runs once on the card station, with OpenSC's debug log switched on through
the user's own opensc.conf (`debug = N; debug_file = ...`) *and* under `p11spy run`, so the two
traces of one run describe the same calls and APDUs (tests compare them). pkcs11-spy gets its
own run of the wrong-PIN scenario. Test PINs only: user PIN 123456; the wrong PIN is 975312.

Writes (ROOT defaults to the repository's fixtures/):
  opensc-debug/real-0.23-card-<scenario>-debug<N>.log   OpenSC's debug_file
  p11spy/real-card-<scenario>.p11                        p11spy run's trace of the same run
  pkcs11-spy/real-0.23-card-wrong-pin.log                pkcs11-spy over opensc-pkcs11.so
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from testbed.card_station import CardStation, card_station, write_opensc_conf

REPO = Path(__file__).resolve().parents[2]
P11SPY = str(Path(sys.executable).parent / "p11spy")
PKCS11_SPY = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"
WRONG_PIN = "975312"

# scenario -> (debug level, pkcs11-tool arguments after --module; {pin}, {data}, {sig} filled)
SCENARIOS = {
    "list": (3, ["-L", "-O"]),
    "wrong-pin": (9, ["--login", "--pin", WRONG_PIN, "-O"]),
    "sign": (9, ["--login", "--pin", "{pin}", "--sign", "--id", "01", "-m",
                 "SHA256-RSA-PKCS", "-i", "{data}", "-o", "{sig}"]),
}


def _args(card: CardStation, work: Path, args: list[str]) -> list[str]:
    fill = {"pin": card.pin, "data": str(work / "data"), "sig": str(work / "sig")}
    return [a.format(**fill) for a in args]


def record(root: Path) -> list[Path]:
    for sub in ("opensc-debug", "p11spy", "pkcs11-spy"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="p11spy-fixtures-") as tmp:
        work = Path(tmp)
        (work / "data").write_bytes(b"p11spy fixture data\n")
        with card_station(work / "station") as card:
            for name, (level, args) in SCENARIOS.items():
                log = root / "opensc-debug" / f"real-0.23-card-{name}-debug{level}.log"
                trace = root / "p11spy" / f"real-card-{name}.p11"
                for old in (log, trace):
                    old.unlink(missing_ok=True)
                conf = write_opensc_conf(work / f"opensc-{level}.conf",
                                         {"debug": level, "debug_file": log})
                env = {**card.env, "OPENSC_CONF": str(conf)}
                out = work / f"{name}-%p.p11"
                subprocess.run([P11SPY, "run", "-o", str(out), "--", "pkcs11-tool", "--module",
                                card.module, *_args(card, work, args)], env=env,
                               capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
                [made] = work.glob(f"{name}-*.p11")
                made.rename(trace)
                os.chmod(trace, 0o644)  # a fixture to commit, not a private trace
                written += [log, trace]
            spy_log = root / "pkcs11-spy" / "real-0.23-card-wrong-pin.log"
            spy_log.unlink(missing_ok=True)
            env = {**card.env, "PKCS11SPY": card.module, "PKCS11SPY_OUTPUT": str(spy_log)}
            subprocess.run(["pkcs11-tool", "--module", PKCS11_SPY, "--login", "--pin",
                            WRONG_PIN, "-O"], env=env, capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
            written.append(spy_log)
    return written


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "fixtures"
    for path in record(root):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
