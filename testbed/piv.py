"""A virtual PIV card (NIST SP 800-73-4) that talks to vsmartcard's vpcd reader driver.

Why it exists: the spy's tests need real APDUs flowing through pcscd and OpenSC's stock PIV
driver without a physical token. The card implements what OpenSC 0.23's card-piv.c sends:
SELECT of the PIV AID, GET DATA for the objects it reads, VERIFY / CHANGE REFERENCE DATA /
RESET RETRY COUNTER with retry counters, GENERAL AUTHENTICATE with the PIV Authentication
key (RSA 2048, raw private-key operation), response chaining (61xx + GET RESPONSE) and
command chaining (CLA 0x10).

`PivCard.process()` maps one command APDU to one response APDU and knows nothing of sockets,
so it can be unit-tested directly; `VpcdLink` carries it over vpcd's TCP protocol (each
message a 2-byte big-endian length and a payload; a 1-byte payload is a control: 0 power
off, 1 power on, 2 reset, 4 get ATR). `VpcdLink.remove()` pulls the card.

Run it by hand against a pcscd that has vpcd configured:
`python -m testbed.piv --port 35963` (Ctrl-C pulls the card).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

PIV_AID = bytes.fromhex("A000000308000010000100")
PIV_PIX = PIV_AID[5:]  # 00 00 10 00 01 00
VPCD_PORT = 35963

# SP 800-73-4 key references, algorithm identifiers and the certificate object of each key.
KEY_PIV_AUTH = 0x9A
ALG_RSA_2048 = 0x07
CERT_TAGS = {0x9A: 0x5FC105, 0x9C: 0x5FC10A, 0x9D: 0x5FC10B, 0x9E: 0x5FC101}
PIN_REF = 0x80
PUK_REF = 0x81

SW_OK = 0x9000


def make_atr(historical: bytes) -> bytes:
    """A T=1 ATR (TS 3B, TD1 80, TD2 01) carrying the historical bytes, with its TCK.

    The historical bytes start with 0x80 (compact TLV) but hold no PIV AID (tag F), so
    OpenSC maps the ATR to no driver of its own and the PIV driver finds the card by
    SELECTing the PIV AID: the path a generic PIV card takes.
    """
    body = bytes([0x80 | len(historical), 0x80, 0x01]) + historical
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes([tck])


# 80: compact TLV; 5x: card issuer's data, 6 bytes "p11spy".
DEFAULT_ATR = make_atr(b"\x80\x56p11spy")


def ber_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82]) + n.to_bytes(2, "big")


def tlv(tag: int, value: bytes) -> bytes:
    """BER-TLV with a 1-3 byte tag given as an integer (0x5FC105 -> 5F C1 05)."""
    tag_bytes = tag.to_bytes((tag.bit_length() + 7) // 8 or 1, "big")
    return tag_bytes + ber_len(len(value)) + value


def parse_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """Parse a flat BER-TLV list; raises ValueError on malformed input."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:  # multi-byte tag
            while True:
                if i >= len(data):
                    raise ValueError("truncated tag")
                tag = (tag << 8) | data[i]
                i += 1
                if not data[i - 1] & 0x80:
                    break
        if i >= len(data):
            raise ValueError("missing length")
        n = data[i]
        i += 1
        if n & 0x80:
            k = n & 0x7F
            if k == 0 or k > 3 or i + k > len(data):
                raise ValueError("bad length")
            n = int.from_bytes(data[i:i + k], "big")
            i += k
        if i + n > len(data):
            raise ValueError("value overruns the data")
        out.append((tag, data[i:i + n]))
        i += n
    return out


def fascn(agency: str = "9999", system: str = "9999", credential: str = "999999",
          person: str = "1234567890") -> bytes:
    """A FASC-N (25 bytes of 5-bit BCD characters with odd parity, LSB first).

    Agency 9999 marks a non-federal issuer; OpenSC then takes the token serial from the GUID.
    """
    ss, fs, es = 0xB, 0xD, 0xF
    chars = [ss, *map(int, agency), fs, *map(int, system), fs, *map(int, credential), fs,
             1, fs, 1, fs, *map(int, person), 1, *map(int, "0000"), 1, es]
    lrc = 0
    for c in chars:
        lrc ^= c
    chars.append(lrc)
    bits = ""
    for c in chars:
        b = "".join("1" if c >> k & 1 else "0" for k in range(4))
        bits += b + ("0" if b.count("1") % 2 else "1")
    return int(bits, 2).to_bytes(25, "big")


@functools.lru_cache(maxsize=1)
def default_key() -> rsa.RSAPrivateKey:
    """One RSA 2048 key per process: generating it costs ~0.1-1 s, tests make many cards."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed(key: rsa.RSAPrivateKey, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "p11spy test station")])
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))


def pad_pin(pin: bytes) -> bytes:
    return pin + b"\xff" * (8 - len(pin))


def valid_pin(padded: bytes) -> bool:
    """SP 800-73-4: a PIN is 6-8 ASCII digits padded with 0xFF to 8 bytes."""
    pin = padded.rstrip(b"\xff")
    return len(padded) == 8 and 6 <= len(pin) <= 8 and pin.isdigit()


@dataclass
class Apdu:
    """A parsed command APDU (short or extended); ne is None when no Le was sent."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    ne: int | None = None

    @classmethod
    def parse(cls, raw: bytes) -> Apdu:
        if len(raw) < 4:
            raise ValueError("APDU shorter than 4 bytes")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, ne=body[0] or 256)
        if body[0] != 0:  # short Lc
            lc = body[0]
            if len(body) == 1 + lc:
                return cls(cla, ins, p1, p2, body[1:])
            if len(body) == 2 + lc:
                return cls(cla, ins, p1, p2, body[1:-1], body[-1] or 256)
            raise ValueError("short APDU length mismatch")
        if len(body) == 3:  # extended Le only
            return cls(cla, ins, p1, p2, ne=int.from_bytes(body[1:], "big") or 65536)
        lc = int.from_bytes(body[1:3], "big")
        if len(body) == 3 + lc:
            return cls(cla, ins, p1, p2, body[3:])
        if len(body) == 5 + lc:
            return cls(cla, ins, p1, p2, body[3:-2], int.from_bytes(body[-2:], "big") or 65536)
        raise ValueError("extended APDU length mismatch")


class CardError(Exception):
    """Ends a command with a status word."""

    def __init__(self, sw: int):
        super().__init__(f"{sw:04X}")
        self.sw = sw


@dataclass
class Counter:
    """A PIN or PUK with its retry counter; the counter persists for the card's lifetime."""

    value: bytes
    max_tries: int
    tries: int = -1
    reports_tries: bool = True  # False: a wrong value answers 6300, without the tries left

    def __post_init__(self) -> None:
        if self.tries < 0:
            self.tries = self.max_tries

    def check(self, padded: bytes) -> None:
        """Raise 6983 if blocked, 63Cx after a wrong value (63C0 on the last try), or 6300
        (verification failed, no counter) on a card that does not report the tries left."""
        if self.tries == 0:
            raise CardError(0x6983)
        if padded != pad_pin(self.value):
            self.tries -= 1
            raise CardError(0x63C0 | self.tries if self.reports_tries else 0x6300)
        self.tries = self.max_tries


@dataclass
class PivCard:
    """The card's state and its command handler.

    pin/puk are ASCII; retries is the PIN's and PUK's retry limit. guid becomes the token
    serial in OpenSC (last 8 bytes as hex); the certificate's CN becomes the token label.
    Every exchange is appended to `log`.
    """

    pin: str = "123456"
    puk: str = "12345678"
    retries: int = 3
    guid: bytes = bytes.fromhex("1175b1ec0de0c4a2d000000000000001")
    atr: bytes = DEFAULT_ATR
    key: rsa.RSAPrivateKey = field(default_factory=default_key)
    cert: x509.Certificate | None = None
    label: str = "p11spy virtual PIV"
    log: list[tuple[bytes, bytes]] = field(default_factory=list)
    # False: like many cards, VERIFY answers a wrong PIN with 6300 and keeps the tries left to
    # itself (the status query too); True (the default): 63Cx with the tries left
    reports_tries: bool = True

    def __post_init__(self) -> None:
        if not (6 <= len(self.pin) <= 8 and self.pin.isdigit()):
            raise ValueError("a PIV PIN is 6-8 digits")
        if len(self.puk) != 8:
            raise ValueError("a PIV PUK is 8 bytes")
        if self.cert is None:
            self.cert = self_signed(self.key, "p11spy PIV Authentication")
        self.pin_counter = Counter(self.pin.encode(), self.retries,
                                   reports_tries=self.reports_tries)
        self.puk_counter = Counter(self.puk.encode(), self.retries)
        self.lock = threading.Lock()
        self.power_on()

    # --- state -----------------------------------------------------------------------

    def power_on(self) -> None:
        """Power-up and reset: no application selected, PIN not verified (counters stay)."""
        with self.lock:
            self.selected = False
            self.verified = False
            self.pending = b""  # response bytes waiting for GET RESPONSE
            self.chain: tuple[int, int, int, bytes] | None = None  # ins, p1, p2, data so far

    @property
    def pin_tries(self) -> int:
        return self.pin_counter.tries

    @property
    def puk_tries(self) -> int:
        return self.puk_counter.tries

    @property
    def serial_hex(self) -> str:
        """What OpenSC shows as the token serial (the GUID's last 8 bytes in hex)."""
        return self.guid[8:].hex()

    def objects(self) -> dict[int, bytes]:
        """GET DATA answers, by tag; anything else answers 6A82."""
        assert self.cert is not None
        chuid = tlv(0x53, tlv(0x30, fascn()) + tlv(0x34, self.guid) + tlv(0x35, b"20991231")
                    + tlv(0x3E, b"") + tlv(0xFE, b""))
        card_id = bytes.fromhex("A000000116FF02") + self.guid[:14]
        ccc = tlv(0x53, tlv(0xF0, card_id) + tlv(0xF1, b"\x21") + tlv(0xF2, b"\x21")
                  + tlv(0xF3, b"") + tlv(0xF4, b"\x00") + tlv(0xF5, b"\x10")
                  + tlv(0xF6, b"") + tlv(0xF7, b"") + tlv(0xFA, b"") + tlv(0xFB, b"")
                  + tlv(0xFC, b"") + tlv(0xFD, b"") + tlv(0xFE, b""))
        discovery = tlv(0x7E, tlv(0x4F, PIV_AID) + tlv(0x5F2F, b"\x40\x00"))
        cert = tlv(0x53, tlv(0x70, self.cert.public_bytes(serialization.Encoding.DER))
                   + tlv(0x71, b"\x00") + tlv(0xFE, b""))
        return {0x5FC102: chuid, 0x5FC107: ccc, 0x7E: discovery, CERT_TAGS[KEY_PIV_AUTH]: cert}

    def application_template(self) -> bytes:
        """SELECT's answer: the Application Property Template (SP 800-73-4 part 2, 3.1.1)."""
        algorithms = b"".join(tlv(0x80, bytes([a])) for a in (0x07, 0x11)) + tlv(0x06, b"\x00")
        return tlv(0x61, tlv(0x4F, PIV_PIX) + tlv(0x79, tlv(0x4F, PIV_AID[:5]))
                   + tlv(0x50, self.label.encode()) + tlv(0xAC, algorithms))

    # --- APDU handling ---------------------------------------------------------------

    def process(self, raw: bytes) -> bytes:
        """One command APDU in, one response APDU (data + SW1 SW2) out."""
        with self.lock:
            resp = self._process(raw)
            self.log.append((bytes(raw), resp))
            return resp

    def _process(self, raw: bytes) -> bytes:
        try:
            apdu = Apdu.parse(raw)
        except ValueError:
            return b"\x67\x00"
        if apdu.ins == 0xC0 and apdu.cla & 0xEF == 0:
            return self._get_response(apdu)
        self.pending = b""
        if apdu.cla & ~0x10 & 0xFF != 0:
            self.chain = None
            return b"\x6e\x00"
        if apdu.cla & 0x10:  # command chaining: collect, answer 9000
            so_far = b""
            if self.chain and self.chain[:3] == (apdu.ins, apdu.p1, apdu.p2):
                so_far = self.chain[3]
            self.chain = (apdu.ins, apdu.p1, apdu.p2, so_far + apdu.data)
            return b"\x90\x00"
        if self.chain:
            if self.chain[:3] == (apdu.ins, apdu.p1, apdu.p2):
                apdu.data = self.chain[3] + apdu.data
            self.chain = None
        try:
            data, sw = self._dispatch(apdu), SW_OK
        except CardError as e:
            data, sw = b"", e.sw
        return self._respond(data, sw, apdu.ne)

    def _respond(self, data: bytes, sw: int, ne: int | None) -> bytes:
        """Return at most ne bytes; the rest waits for GET RESPONSE behind 61xx."""
        if sw != SW_OK or len(data) <= (ne or 0):
            return data + sw.to_bytes(2, "big")
        first, self.pending = data[:ne or 0], data[ne or 0:]
        return first + bytes([0x61, min(len(self.pending), 256) & 0xFF])

    def _get_response(self, apdu: Apdu) -> bytes:
        if apdu.p1 or apdu.p2:
            return b"\x6a\x86"
        if not self.pending:
            return b"\x69\x85"
        data, self.pending = self.pending, b""
        return self._respond(data, SW_OK, apdu.ne or 256)

    def _dispatch(self, apdu: Apdu) -> bytes:
        if apdu.ins == 0xA4:
            return self._select(apdu)
        handler: Callable[[Apdu], bytes] | None = {
            0xCB: self._get_data, 0x20: self._verify, 0x24: self._change_reference,
            0x2C: self._reset_retry_counter, 0x87: self._general_authenticate,
        }.get(apdu.ins)
        if apdu.ins in (0xDB, 0x47, 0xFE):  # PUT DATA, GENERATE, SET MGMT KEY: need admin
            handler = self._admin_only
        if handler is None or not self.selected:
            raise CardError(0x6D00)
        return handler(apdu)

    def _select(self, apdu: Apdu) -> bytes:
        if apdu.p1 != 0x04:
            raise CardError(0x6A82)  # no file system on a PIV card
        # A right-truncated AID selects too (OpenSC sends the 9-byte form).
        if len(apdu.data) < 5 or not PIV_AID.startswith(apdu.data):
            raise CardError(0x6A82)
        if not self.selected:
            self.verified = False
        self.selected = True
        return b"" if apdu.p2 == 0x0C else self.application_template()

    def _get_data(self, apdu: Apdu) -> bytes:
        if (apdu.p1, apdu.p2) != (0x3F, 0xFF):
            raise CardError(0x6A86)
        try:
            [(tag, value)] = parse_tlvs(apdu.data)
        except ValueError:
            raise CardError(0x6A80) from None
        if tag != 0x5C or not 1 <= len(value) <= 3:
            raise CardError(0x6A80)
        obj = self.objects().get(int.from_bytes(value, "big"))
        if obj is None:
            raise CardError(0x6A82)
        return obj

    def _verify(self, apdu: Apdu) -> bytes:
        if apdu.p1 == 0xFF and not apdu.data:  # reset security status
            self.verified = False
            return b""
        if apdu.p1 != 0x00:
            raise CardError(0x6A86)
        if apdu.p2 != PIN_REF:
            raise CardError(0x6A88)  # no global PIN; the PUK cannot be VERIFYed
        if not apdu.data:  # status query
            if self.verified:
                return b""
            if self.pin_tries == 0:
                raise CardError(0x6983)
            raise CardError(0x63C0 | self.pin_tries if self.reports_tries else 0x6300)
        if len(apdu.data) != 8:
            raise CardError(0x6A80)
        self.verified = False
        self.pin_counter.check(apdu.data)
        self.verified = True
        return b""

    def _change_reference(self, apdu: Apdu) -> bytes:
        if apdu.p1 != 0x00 or apdu.p2 not in (PIN_REF, PUK_REF):
            raise CardError(0x6A86)
        if len(apdu.data) != 16:
            raise CardError(0x6A80)
        counter = self.pin_counter if apdu.p2 == PIN_REF else self.puk_counter
        old, new = apdu.data[:8], apdu.data[8:]
        counter.check(old)
        if apdu.p2 == PIN_REF and not valid_pin(new):
            raise CardError(0x6A80)
        counter.value = new.rstrip(b"\xff")
        return b""

    def _reset_retry_counter(self, apdu: Apdu) -> bytes:
        if apdu.p1 != 0x00 or apdu.p2 != PIN_REF:
            raise CardError(0x6A86)
        if len(apdu.data) != 16:
            raise CardError(0x6A80)
        self.puk_counter.check(apdu.data[:8])
        if not valid_pin(apdu.data[8:]):
            raise CardError(0x6A80)
        self.pin_counter.value = apdu.data[8:].rstrip(b"\xff")
        self.pin_counter.tries = self.pin_counter.max_tries
        return b""

    def _general_authenticate(self, apdu: Apdu) -> bytes:
        if apdu.p2 != KEY_PIV_AUTH:
            raise CardError(0x6A88)  # only the PIV Authentication key exists
        if apdu.p1 != ALG_RSA_2048:
            raise CardError(0x6A86)
        try:
            [(tag, template)] = parse_tlvs(apdu.data)
            fields = dict(parse_tlvs(template))
        except ValueError:
            raise CardError(0x6A80) from None
        if tag != 0x7C or fields.get(0x82) != b"" or 0x81 not in fields:
            raise CardError(0x6A80)
        if not self.verified:
            raise CardError(0x6982)
        numbers = self.key.private_numbers()
        n = numbers.public_numbers.n
        size = (n.bit_length() + 7) // 8
        challenge = fields[0x81]
        m = int.from_bytes(challenge, "big")
        if len(challenge) != size or m >= n:
            raise CardError(0x6A80)
        signature = pow(m, numbers.d, n).to_bytes(size, "big")
        return tlv(0x7C, tlv(0x82, signature))

    def _admin_only(self, apdu: Apdu) -> bytes:
        raise CardError(0x6982)


class VpcdLink:
    """Carries a PivCard over vpcd's socket protocol in a daemon thread.

    remove() pulls the card (closes the connection: vpcd reports the card absent);
    insert() puts it back; remove_when(pred) pulls it when a command APDU matching pred
    arrives, before answering it, so a command is cut off in flight.
    """

    def __init__(self, card: PivCard, port: int = VPCD_PORT, host: str = "127.0.0.1"):
        self.card = card
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.trigger: Callable[[Apdu], bool] | None = None
        self.error: BaseException | None = None
        self.pulled = threading.Event()

    @property
    def inserted(self) -> bool:
        return self.sock is not None

    def insert(self, timeout: float = 10.0) -> None:
        """Connect to vpcd (retrying until it listens) and start serving."""
        if self.sock is not None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"vpcd does not accept a card on "
                                       f"{self.host}:{self.port}: {e}") from e
                time.sleep(0.05)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.pulled.clear()
        self.card.power_on()
        self.thread = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                       name=f"piv-card:{self.port}")
        self.thread.start()

    def remove(self) -> None:
        """Pull the card: close the connection and wait for the serving thread to end."""
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
        self.thread = None

    def remove_when(self, predicate: Callable[[Apdu], bool] | None) -> None:
        self.trigger = predicate

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                header = _recv_exact(sock, 2)
                if header is None:
                    return
                (n,) = struct.unpack(">H", header)
                payload = _recv_exact(sock, n)
                if payload is None:
                    return
                reply = self._handle(payload)
                if reply is None and self.pulled.is_set():
                    return
                if reply is not None:
                    sock.sendall(struct.pack(">H", len(reply)) + reply)
        except OSError:
            return  # connection closed by remove() or by vpcd
        except BaseException as e:  # a bug in the card: keep it for the test to see
            self.error = e
        finally:
            if self.sock is sock:
                self.sock = None
                sock.close()

    def _handle(self, payload: bytes) -> bytes | None:
        if len(payload) == 1:
            if payload[0] in (0, 1, 2):  # power off / on / reset
                self.card.power_on()
                return None
            if payload[0] == 4:
                return self.card.atr
            return None
        trigger = self.trigger
        if trigger is not None:
            try:
                hit = trigger(Apdu.parse(payload))
            except ValueError:
                hit = False
            if hit:  # _serve closes the connection without answering
                self.trigger = None
                self.pulled.set()
                return None
        return self.card.process(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        # vpcd writes the length and the payload in two send()s; without an immediate ACK,
        # Nagle on its side and delayed ACK on ours cost ~40 ms per APDU.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=VPCD_PORT)
    ap.add_argument("--pin", default="123456")
    ap.add_argument("--puk", default="12345678")
    args = ap.parse_args(argv)
    link = VpcdLink(PivCard(pin=args.pin, puk=args.puk), args.port)
    link.insert()
    print(f"card inserted on vpcd port {args.port}; Ctrl-C pulls it", flush=True)
    try:
        while link.inserted:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    link.remove()


if __name__ == "__main__":
    main()
