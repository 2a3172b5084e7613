"""Records the real pcsc-spy fixtures: `python -m testbed.record_pcscspy [DIR]`.

Why: the pcsc-spy reader must be tested on what pcsc-lite's spy really writes when a card
answers, in both forms users have: the raw stream libpcscspy writes to its FIFO (recorded
with `cat ~/pcsc-spy > log`) and the text the `pcsc-spy` tool prints from it.

How libpcscspy is used on Debian 12 (pcsc-lite 1.9.9): the library exports the PC/SC API and,
on its first SCardEstablishContext, dlopens `libpcsclite_nospy.so.1` (else `libpcsclite.so.1`)
for the real functions and opens `$HOME/pcsc-spy` for writing (a FIFO: the open blocks until a
reader has it open; without the file, spying is silently off). OpenSC dlopens
`libpcsclite.so.1` itself, so LD_PRELOAD cannot interpose: a private directory on
LD_LIBRARY_PATH holds `libpcsclite.so.1 -> libpcscspy.so.0` and
`libpcsclite_nospy.so.1 -> the real libpcsclite.so.1`. HOME is a temporary directory, so
the FIFO is private. Each scenario's FIFO is read by `cat` into the .raw file while the client
runs; the decoded .txt files are `pcsc-spy` run on the .raw file afterwards.

Test PINs only: the card's PIN is 123456, the wrong PIN 975312 (pcsc-spy shows VERIFY's data,
the PIN, in clear).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from testbed.card_station import CardStation, card_station

REPO = Path(__file__).resolve().parents[2]
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
SPY_LIB = LIBDIR / "libpcscspy.so.0"
REAL_LIB = LIBDIR / "libpcsclite.so.1"
PCSC_SPY = "/usr/bin/pcsc-spy"
WRONG_PIN = "975312"
PREFIX = "real-1.9.9-"

# The project's ctypes PC/SC client, as a program of its own. "threads": two threads, each with
# its own context and connection, selecting the PIV application and reading the CHUID at once
# (the raw stream interleaves two thread ids), then one GET DATA with a 2-byte receive buffer,
# which SCardTransmit refuses (SCARD_E_INSUFFICIENT_BUFFER). "null-pci": one SCardTransmit
# with pioRecvPci NULL, which libpcscspy 1.9.9 dereferences: the client dies (SIGSEGV) and the
# trace ends inside that call.
CLIENT = """\
import ctypes, sys, threading
from testbed import pcsc
lib = pcsc._lib()
reader, mode = sys.argv[1].encode(), sys.argv[2]
SELECT = bytes.fromhex("00A4040009A0000003080000100000")
CHUID = bytes.fromhex("00CB3FFF055C035FC10200")
def connect():
    ctx = pcsc.LONG()
    assert lib.SCardEstablishContext(pcsc.SCARD_SCOPE_SYSTEM, None, None, ctypes.byref(ctx)) == 0
    card, proto = pcsc.LONG(), pcsc.DWORD()
    assert lib.SCardConnect(ctx, reader, pcsc.SCARD_SHARE_SHARED, 3, ctypes.byref(card),
                            ctypes.byref(proto)) == 0
    return ctx, card, pcsc.IoRequest(proto.value, ctypes.sizeof(pcsc.IoRequest))
def transmit(card, pci, apdu, room=65538, recv_pci=True):
    buf = ctypes.create_string_buffer(room)
    n = pcsc.DWORD(room)
    out = pcsc.IoRequest(0, ctypes.sizeof(pcsc.IoRequest))
    return lib.SCardTransmit(card, ctypes.byref(pci), apdu, len(apdu),
                             ctypes.byref(out) if recv_pci else None, buf, ctypes.byref(n))
def close(ctx, card):
    lib.SCardDisconnect(card, pcsc.SCARD_LEAVE_CARD)
    lib.SCardReleaseContext(ctx)
if mode == "null-pci":
    ctx, card, pci = connect()
    transmit(card, pci, SELECT, recv_pci=False)
    sys.exit(0)
go = threading.Barrier(2)
def run():
    ctx, card, pci = connect()
    go.wait()
    for _ in range(3):
        assert transmit(card, pci, SELECT) == 0
        assert transmit(card, pci, CHUID) == 0
    close(ctx, card)
threads = [threading.Thread(target=run) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctx, card, pci = connect()
assert transmit(card, pci, SELECT) == 0
assert transmit(card, pci, CHUID, room=2) == 0x80100008
close(ctx, card)
"""


class Spy:
    """The spying library set up in a work directory, and a way to run one client through it."""

    def __init__(self, work: Path) -> None:
        self.lib = work / "spylib"
        self.home = work / "home"
        self.lib.mkdir(parents=True)
        self.home.mkdir(parents=True)
        (self.lib / "libpcsclite.so.1").symlink_to(SPY_LIB)
        (self.lib / "libpcsclite_nospy.so.1").symlink_to(REAL_LIB)
        self.fifo = self.home / "pcsc-spy"
        os.mkfifo(self.fifo)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "HOME": str(self.home), "LD_LIBRARY_PATH": str(self.lib),
                "PYTHONPATH": str(REPO)}

    def capture(self, out: Path, cmd: list[str], env: dict[str, str]
                ) -> subprocess.CompletedProcess[str]:
        """Run cmd with the spy; the FIFO's lines go to out (the raw stream)."""
        with out.open("wb") as sink:
            cat = subprocess.Popen(["cat", str(self.fifo)], stdout=sink)
            try:
                r = subprocess.run(cmd, env=self.env(env), capture_output=True, text=True,
                                   timeout=60, stdin=subprocess.DEVNULL)
                try:
                    cat.wait(10)
                except subprocess.TimeoutExpired:
                    # The client never opened the FIFO (the spy was not loaded): open it for
                    # writing ourselves so that cat sees its end.
                    fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                    os.close(fd)
                    cat.wait(10)
            finally:
                if cat.poll() is None:
                    cat.kill()
                    cat.wait()
        if not out.stat().st_size:
            raise RuntimeError(f"{out.name}: nothing came through the FIFO: {r.stderr[-500:]}")
        return r


def decoded(raw: Path, out: Path, *options: str) -> None:
    """The text `pcsc-spy` prints for a recorded raw stream."""
    with out.open("w") as sink:
        subprocess.run([PCSC_SPY, *options, str(raw)], stdout=sink, stderr=subprocess.STDOUT,
                       timeout=60, stdin=subprocess.DEVNULL)  # what it printed, even if it failed


def record(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="p11spy-pcscspy-") as tmp:
        work = Path(tmp)
        spy = Spy(work)
        with card_station(work / "station") as card:
            written += _scenarios(card, spy, root)
    return written


def _scenarios(card: CardStation, spy: Spy, root: Path) -> list[Path]:
    def raw(name: str) -> Path:
        return root / f"{PREFIX}{name}.raw"

    out = []
    # opensc-tool --name: connect, a few SELECTs, the card's name.
    r = spy.capture(raw("opensc-tool-name"), ["opensc-tool", "--reader", card.reader, "--name"],
                    card.env)
    if r.returncode != 0:
        raise RuntimeError(f"opensc-tool --name failed: {r.stderr}")
    out.append(raw("opensc-tool-name"))

    # A wrong PIN: VERIFY answered 63C2, C_Login fails with CKR_PIN_INCORRECT.
    r = spy.capture(raw("card-wrong-pin"), ["pkcs11-tool", "--module", card.module, "--login",
                                            "--pin", WRONG_PIN, "-O"], card.env)
    if r.returncode == 0 or "CKR_PIN_INCORRECT" not in r.stderr:
        raise RuntimeError(f"the wrong PIN was not refused: {r.stdout} {r.stderr}")
    out.append(raw("card-wrong-pin"))

    # The card pulled when the VERIFY arrives (before it is answered).
    # vpcd then answers the transmit with no bytes and SCARD_S_SUCCESS.
    card.remove_when(lambda apdu: apdu.ins == 0x20 and bool(apdu.data))
    try:
        spy.capture(raw("card-pulled-at-verify"),
                    ["pkcs11-tool", "--module", card.module, "--login", "--pin", card.pin, "-O"],
                    card.env)
    finally:
        card.remove_when(None)
    card.wait_removed()
    card.insert()
    out.append(raw("card-pulled-at-verify"))

    # Two threads transmitting at once, then a transmit refused (SCARD_E_INSUFFICIENT_BUFFER).
    r = spy.capture(raw("two-threads"), [sys.executable, "-c", CLIENT, card.reader, "threads"],
                    card.env)
    if r.returncode != 0:
        raise RuntimeError(f"the two-thread client failed ({r.returncode}): {r.stderr}")
    out.append(raw("two-threads"))

    # pioRecvPci NULL: the spy itself crashes the client in the middle of SCardTransmit.
    r = spy.capture(raw("null-recv-pci-crash"),
                    [sys.executable, "-c", CLIENT, card.reader, "null-pci"], card.env)
    if r.returncode != -11:
        raise RuntimeError(f"the NULL pioRecvPci client did not crash ({r.returncode})")
    out.append(raw("null-recv-pci-crash"))

    # What pcsc-spy prints from them: -n (no colour) for each, plus colour, -t and -d once.
    for path in list(out):
        text = path.with_name(path.stem + "-decoded-n.txt")
        decoded(path, text, "-n")
        out.append(text)
    for stem, options, tag in [("card-wrong-pin", ["-t"], "colour-t"),
                               ("two-threads", ["-n", "-t"], "n-t"),
                               ("opensc-tool-name", ["-n", "-d"], "n-d")]:
        text = root / f"{PREFIX}{stem}-decoded-{tag}.txt"
        decoded(raw(stem), text, *options)
        out.append(text)
    return out


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "fixtures" / "pcsc-spy"
    for path in record(root):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
