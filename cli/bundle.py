"""`p11spy bundle`: the command around spy/bundle.py (the shims and a README for a server
without Python, in one tar.gz)."""

from __future__ import annotations

import argparse
import sys


def _bundle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from p11spy.spy.bundle import default_name, write_bundle

    dest = Path(args.output or default_name())
    needs = write_bundle(dest, args.arch)
    print(f"p11spy bundle: {dest}: shims for {', '.join(n.arch for n in needs)}, README.md "
          f"for the server", file=sys.stderr)
    for n in needs:
        if n.beyond:  # e.g. shims built with cffi's embedding, which link one libpython
            print(f"p11spy bundle: warning: the {n.arch} shims also need {', '.join(n.beyond)}"
                  f": they load only on a server that has these", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bundle", help="pack the shims and a README for a server without Python",
        description="Write a tar.gz holding the shims of every architecture built (one folder "
                    "each, named as `uname -m` names the machine) and a README: which "
                    "variables to set, how to point MQ, Java, NSS or p11-kit at the shim, "
                    "where the trace lands and how to read it here with `p11spy decode`.")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="the tarball to write (default: p11spy-shim-VERSION.tar.gz here)")
    p.add_argument("--arch", action="append", metavar="ARCH",
                   help="only this architecture's shims (repeatable; default: every one built, "
                        "as `p11spy lib --arch` names them)")
    p.set_defaults(func=_bundle)
