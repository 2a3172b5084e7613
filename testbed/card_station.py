"""Card station: pcscd with a vpcd reader of its own, and the virtual PIV card inserted in it.

Why: tests of the spy against OpenSC need APDUs that really cross PC/SC, and must not depend on
a pcscd or a card someone started by hand. The station starts Debian's pcscd in the foreground
with a private reader.conf.d (one vpcd reader on a free TCP port), connects a `PivCard` to it,
waits until PC/SC reports the card present, and tears everything down afterwards.

Tests use the `piv_card` fixture (tests/conftest.py):

    def test_x(piv_card):
        r = piv_card.pkcs11_tool("--login", "--pin", piv_card.pin, "-O")

`piv_card` yields a `CardStation`: `.reader` (PC/SC reader name), `.pin` / `.puk`, `.env` (the
environment for OpenSC clients: OPENSC_CONF pointing at a config with file caching off so runs
are repeatable), `.module` (opensc-pkcs11.so), `.card` (the `PivCard`: retry counters, cert,
key, APDU log), `.remove()` / `.insert()` and `.remove_when(predicate)` to pull the card. Other
PINs: `@pytest.mark.parametrize("piv_card", [{"pin": "654321"}], indirect=True)` (any
`PivCard` field). Outside pytest: `with card_station(workdir) as station: ...`.

pcscd's socket is fixed (/run/pcscd/pcscd.comm), so one station runs at a time per machine:
a lock file serialises stations (bounded wait). A pcscd already running that the station did not
start is used only if it has a vpcd reader; the station says so on stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.x509.oid import NameOID

from testbed import pcsc
from testbed.piv import Apdu, PivCard, VpcdLink

PCSCD = "/usr/sbin/pcscd"
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
SYSTEM_READER_CONF = Path("/etc/reader.conf.d")
OPENSC_MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
LOCK_PATH = Path(tempfile.gettempdir()) / "p11spy-card-station.lock"
READER_NAME = "p11spy vpcd"


def write_opensc_conf(path: Path, app: dict[str, object] | None = None,
                      pkcs15: dict[str, object] | None = None) -> Path:
    """An opensc.conf for the station's clients, with settings of `app default` (debug,
    debug_file, card_drivers) and of its pkcs15 framework added. File caching is always off:
    every run reads the card afresh, so a card made with another key or PIN in an earlier run
    cannot be shadowed by a cache."""
    lines = ["# Written by testbed/card_station.py.", "app default {"]
    lines += [f"\t{k} = {v};" for k, v in (app or {}).items()]
    lines += ["\tframework pkcs15 {", "\t\tuse_file_caching = false;"]
    lines += [f"\t\t{k} = {v};" for k, v in (pkcs15 or {}).items()]
    lines += ["\t}", "}", ""]
    path.write_text("\n".join(lines))
    return path


class StationError(RuntimeError):
    """The station could not be set up; the message says what to fix."""


@contextlib.contextmanager
def station_lock(timeout: float = 600.0) -> Iterator[None]:
    """Only one station per machine (pcscd's socket path is fixed): wait, bounded, for ours."""
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                    raise StationError(f"another card station (pid {holder or '?'}) holds "
                                     f"{LOCK_PATH} for more than {timeout:.0f} s") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _free_port_pair() -> int:
    """A port p with p and p+1 free: vpcd listens on both (it makes two readers)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port + 1))
            except OSError:
                continue
        return port
    raise StationError("no free TCP port pair for vpcd")


def _die_with_parent() -> None:
    """Child side: get SIGTERM if the test process dies, so no pcscd outlives a killed run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _pcscd_answers() -> bool:
    try:
        with pcsc.Context():
            return True
    except pcsc.PcscError:
        return False


def _system_vpcd() -> tuple[str, int] | None:
    """The vpcd reader of the system's reader.conf.d: (FRIENDLYNAME, port), if any."""
    for conf in sorted(SYSTEM_READER_CONF.glob("*")):
        text = conf.read_text(errors="replace")
        if "libifdvpcd" not in text:
            continue
        name = re.search(r'^\s*FRIENDLYNAME\s+"?([^"\n]+)"?', text, re.M)
        dev = re.search(r"^\s*DEVICENAME\s+\S*:(\S+)", text, re.M)
        if name and dev:
            return name.group(1).strip(), int(dev.group(1), 0)
    return None


def stop_process(proc: subprocess.Popen) -> None:
    """Ends a daemon we started: politely, then for sure."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Pcscd:
    """pcscd -f with a reader.conf.d holding one vpcd entry on a free port.

    start() takes the station lock, stop() releases it. If a pcscd that is not ours already
    answers, it is used (with its vpcd reader) instead of starting one, with a warning.
    """

    def __init__(self, workdir: Path, pinpad: str | None = None):
        self.workdir = workdir
        self.pinpad = pinpad  # the PIN the virtual keypad types (testbed/pinpad.c)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.reader_prefix = READER_NAME
        self.foreign = False
        self.log = workdir / "pcscd.log"
        self._lock: contextlib.ExitStack | None = None

    def alive(self) -> bool:
        return self.foreign or (self.proc is not None and self.proc.poll() is None)

    def start(self, timeout: float = 15.0) -> Pcscd:
        for tool in (PCSCD, VPCD_DRIVER):
            if not Path(tool).exists():
                raise StationError(f"{tool} is missing: run `make setup` (pcscd, vsmartcard-vpcd)")
        stack = contextlib.ExitStack()
        stack.enter_context(station_lock())
        try:
            self._start(timeout)
        except BaseException:
            self._stop_proc()
            stack.close()
            raise
        self._lock = stack
        return self

    def _start(self, timeout: float) -> None:
        if _pcscd_answers():
            system = _system_vpcd()
            if system is None:
                raise StationError(f"a pcscd not started by the station is running ({PCSCD_SOCKET})"
                                 " and has no vpcd reader configured: stop it")
            self.foreign = True
            self.reader_prefix, self.port = system
            print(f"card station: using the pcscd already running, vpcd reader "
                  f"{self.reader_prefix!r} on port {self.port}", file=sys.stderr)
            try:  # its vpcd reader exists and has no card in it
                pcsc.wait_for(self.reader_prefix, False, 5.0)
            except TimeoutError as e:
                raise StationError(f"the pcscd already running is not usable: {e}") from e
            return
        for stale in (PCSCD_SOCKET, PCSCD_SOCKET.with_name("pcscd.pid")):
            stale.unlink(missing_ok=True)
        self.port = _free_port_pair()
        conf = self.workdir / "reader.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        driver = VPCD_DRIVER
        if self.pinpad is not None:
            driver = str(build_pinpad(self.workdir))
            env.update(P11SPY_PINPAD_DRIVER=VPCD_DRIVER, P11SPY_PINPAD_PIN=self.pinpad)
        (conf / "vpcd").write_text(f'FRIENDLYNAME "{READER_NAME}"\n'
                                   f"DEVICENAME /dev/null:{self.port}\n"
                                   f"LIBPATH {driver}\n"
                                   f"CHANNELID {self.port}\n")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [PCSCD, "--foreground", "--apdu", "--config", str(conf)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent, env=env)
        deadline = time.monotonic() + timeout
        while not _pcscd_answers():
            if self.proc.poll() is not None:
                raise StationError(f"pcscd exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise StationError(f"pcscd did not answer within {timeout:.0f} s: "
                                 f"{self.log_tail()}")
            time.sleep(0.05)
        try:
            pcsc.wait_for(self.reader_prefix, False, max(1.0, deadline - time.monotonic()))
        except TimeoutError as e:
            raise StationError(f"{e}; pcscd log: {self.log_tail()}") from e

    def reader(self) -> str:
        """The reader name of the slot the card's port feeds (vpcd's first slot)."""
        return f"{self.reader_prefix} 00 00"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _stop_proc(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    def stop(self) -> None:
        self._stop_proc()
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def build_pinpad(workdir: Path) -> Path:
    """The virtual PIN-pad reader driver (testbed/pinpad.c), compiled for this station."""
    out = workdir / "libifdpinpad.so"
    res = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-I/usr/include/PCSC",
                          "-o", str(out), str(Path(__file__).with_name("pinpad.c")), "-ldl"],
                         capture_output=True, text=True)
    if res.returncode:
        raise StationError(f"cannot build the PIN-pad reader driver: {res.stderr.strip()}")
    return out


@dataclass
class CardStation:
    """What a test gets: the card, its reader, and ways to reach it or pull it."""

    card: PivCard
    link: VpcdLink
    daemon: Pcscd
    reader: str
    env: dict[str, str]
    module: str = OPENSC_MODULE
    timeout: float = 10.0

    @property
    def pin(self) -> str:
        return self.card.pin

    @property
    def puk(self) -> str:
        return self.card.puk

    @property
    def token_label(self) -> str:
        """OpenSC's PIV emulation names the token after the PIV Authentication cert's CN."""
        assert self.card.cert is not None
        [cn] = self.card.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(cn.value)

    def insert(self, wait: bool = True) -> None:
        """Put the card (back) in and wait until PC/SC reports it present."""
        self.link.insert()
        if wait:
            self._wait(True)

    def remove(self, wait: bool = True) -> None:
        """Pull the card (close its vpcd connection) and wait until PC/SC reports it absent."""
        self.link.remove()
        if wait:
            self._wait(False)

    def remove_when(self, predicate: Callable[[Apdu], bool] | None) -> None:
        """Pull the card when a command matching predicate arrives, before it is answered."""
        self.link.remove_when(predicate)

    def wait_removed(self) -> None:
        self._wait(False)

    def _wait(self, present: bool) -> None:
        try:
            pcsc.wait_for(self.reader, present, self.timeout,
                          self.card.atr if present else None)
        except TimeoutError as e:
            raise StationError(f"{e}; pcscd log: {self.daemon.log_tail()}") from e

    def transmit(self, *apdus: bytes) -> list[bytes]:
        """Send raw APDUs through PC/SC (one connection, card left as it is)."""
        with pcsc.Context() as ctx:
            return ctx.transmit(self.reader, list(apdus))

    def run(self, cmd: list[str], timeout: float = 30.0, **env: str
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, env={**self.env, **env}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def pkcs11_tool(self, *args: str, timeout: float = 30.0, **env: str
                    ) -> subprocess.CompletedProcess[str]:
        """pkcs11-tool against opensc-pkcs11.so (no --slot: the station's card is the only one
        unless a foreign pcscd has more readers)."""
        return self.run(["pkcs11-tool", "--module", self.module, *args], timeout, **env)

    def opensc_tool(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return self.run(["opensc-tool", "--reader", self.reader, *args], timeout)


def client_env(workdir: Path) -> dict[str, str]:
    """Environment for OpenSC clients: the station's opensc.conf, the default pcscd socket."""
    conf = write_opensc_conf(workdir / "opensc.conf")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PCSCLITE_CSOCK_NAME", "OPENSC_DEBUG", "OPENSC_DRIVER")}
    env["OPENSC_CONF"] = str(conf)
    return env


@contextlib.contextmanager
def card_inserted(daemon: Pcscd, workdir: Path, timeout: float = 10.0,
                  wait_removed: bool = True, **card_args: object) -> Iterator[CardStation]:
    """A fresh PivCard (card_args: PivCard fields) in the daemon's reader, pulled on exit.

    wait_removed: on exit, wait until pcscd has seen the card go, so that the next card
    inserted in the same reader does not meet this one's state (pointless if pcscd stops).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    card = PivCard(**card_args)  # type: ignore[arg-type]
    link = VpcdLink(card, daemon.port)
    station = CardStation(card, link, daemon, daemon.reader(), client_env(workdir), timeout=timeout)
    try:
        station.insert()
        yield station
    finally:
        link.remove_when(None)
        link.remove()
        with contextlib.suppress(StationError):
            if wait_removed and daemon.alive():
                station.wait_removed()  # the next card must not meet this one's state
    if link.error is not None:
        raise StationError(f"the virtual card failed: {link.error!r}") from link.error


@contextlib.contextmanager
def card_station(workdir: Path | None = None, timeout: float = 10.0, pinpad: str | None = None,
               **card_args: object) -> Iterator[CardStation]:
    """pcscd + card, both stopped on exit. For scripts and tests outside the fixture.

    pinpad: make the reader a PIN-pad reader whose keypad types this PIN (the client then
    verifies with SCardControl(VERIFY_PIN_DIRECT) instead of a VERIFY APDU).
    """
    tmp = None
    if workdir is None:
        tmp = workdir = Path(tempfile.mkdtemp(prefix="p11spy-card-"))
    daemon = Pcscd(workdir, pinpad).start()
    try:
        with card_inserted(daemon, workdir / "card", timeout, daemon.foreign,
                           **card_args) as station:
            yield station
    finally:
        daemon.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
