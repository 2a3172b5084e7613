"""`p11spy run`: a client run with the spy preloaded, and a report of the traces it left."""

from __future__ import annotations

import argparse
import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from p11spy.decoder.cli import UserError

from .commands import PRELOAD


def _pattern_glob(pattern: str) -> str:
    """The files a P11SPY_OUTPUT pattern can produce, as a glob."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append("%" if nxt == "%" else (str(os.getuid()) if nxt == "u" else "*"))
            i += 2
            continue
        out.append(glob.escape(c))
        i += 1
    return "".join(out)


def _default_output() -> str:
    folder = Path(f"/tmp/p11spy-{os.getuid()}")
    folder.mkdir(mode=0o700, exist_ok=True)
    run = folder / time.strftime("run-%Y%m%d-%H%M%S")
    n = 0
    while True:
        candidate = run.with_name(f"{run.name}-{n}") if n else run
        try:
            candidate.mkdir(mode=0o700)
            return str(candidate / "%n-%p.p11")
        except FileExistsError:
            n += 1


def run_traced(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UserError("no command given: p11spy run [-o OUTPUT] [--module PATH] -- COMMAND...")
    if not PRELOAD.is_file():
        raise UserError(f"the spy is not built ({PRELOAD} is missing): run `make setup`")
    output = args.output or _default_output()
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(PRELOAD), env.get("LD_PRELOAD", "")]))
    env["P11SPY_OUTPUT"] = output
    if args.module:
        env["P11SPY_WRAP"] = ":".join(args.module)
    else:
        env.pop("P11SPY_WRAP", None)
    if args.log_secrets:
        env["P11SPY_LOG_SECRETS"] = "1"
    started = time.time()
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        raise UserError(f"cannot run {command[0]}: {exc.strerror}", status=127) from exc
    # The terminal's Ctrl-C reaches the client; we wait for it to finish and report.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        status = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    traces = sorted(p for p in glob.glob(_pattern_glob(output))
                    if os.path.getmtime(p) >= started - 1)
    if traces:
        print(f"p11spy: {len(traces)} trace(s): {' '.join(traces)}", file=sys.stderr)
    else:
        print("p11spy: no trace: the command loaded no PKCS#11 module and used no reader",
              file=sys.stderr)
    return 128 - status if status < 0 else status
