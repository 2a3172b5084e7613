"""Subcommands of the capture side: `p11spy lib` and `p11spy run`."""

from __future__ import annotations

import argparse
import os


def _lib(args: argparse.Namespace) -> int:
    from p11spy.spy.shims import NATIVE, shim_path

    arch = args.arch or NATIVE
    module = args.module
    if arch == NATIVE and not module:  # the variables name a module of this machine
        module = os.environ.get("P11SPY_MODULE") or os.environ.get("PKCS11SPY")
    print(shim_path(module or None, arch))
    return 0


def _run(args: argparse.Namespace) -> int:
    from p11spy.spy.run import run_traced

    return run_traced(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lib",
        help="print the path of the shim module, to give a client in place of the real module",
        description=(
            "Print the absolute path of the p11spy shim module. Give it to the client wherever "
            "it takes a PKCS#11 module path, and name the real module in P11SPY_MODULE. "
            "Traces go to P11SPY_OUTPUT (%%p = pid, %%n = program name, %%u = uid, "
            "%%t = start time); by default /tmp/p11spy-<uid>/<program>-<pid>.p11. "
            "PKCS11SPY and PKCS11SPY_OUTPUT are honoured when the P11SPY_ variables are unset. "
            "PINs and secret key values are masked unless P11SPY_LOG_SECRETS=1; buffers larger "
            "than P11SPY_MAX_BUFFER bytes (default 65536) are recorded as length and digest."
        ),
    )
    p.add_argument("--module", metavar="PATH",
                   help="the real module (default: $P11SPY_MODULE, then $PKCS11SPY); for a "
                        "module without PKCS#11 3.0 interfaces the shim printed exports none")
    p.add_argument("--arch", metavar="ARCH",
                   help="the shim built for another architecture, named as `uname -m` names "
                        "it (x86_64, aarch64, s390x, ppc64le); default: this machine's")
    p.set_defaults(func=_lib)

    r = sub.add_parser(
        "run",
        help="run a client with the spy preloaded: every PKCS#11 module it loads is traced, "
             "with the APDUs under each call",
        description=(
            "Run COMMAND with the spy preloaded (LD_PRELOAD), so that every PKCS#11 module it or "
            "its children load, by dlopen, through NSS, p11-kit or a JVM, is traced with no "
            "change to their configuration, and the PC/SC calls (APDUs) each module makes are "
            "recorded under the PKCS#11 call that made them. Prints where the traces went and "
            "exits with COMMAND's status."
        ),
    )
    r.add_argument("-o", "--output", metavar="PATTERN",
                   help="trace file pattern (%%p pid, %%n program, %%u uid, %%t time); default: "
                        "a new folder /tmp/p11spy-<uid>/run-<time>/ with one file per process")
    r.add_argument("--module", action="append", metavar="PATH", default=[],
                   help="trace only this module (path or file name; repeatable)")
    r.add_argument("--show", action="store_true",
                   help="watch the trace live in the viewer while COMMAND runs (COMMAND's "
                        "input is /dev/null; its output is printed when the viewer closes)")
    r.add_argument("--log-secrets", action="store_true",
                   help="record PINs and key values in clear (the trace says so)")
    r.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    r.set_defaults(func=_run)
