"""`p11spy diagnose TRACE...`: findings, most important first, as text or JSON Lines.

Exit status: 0 when nothing above "info" was found, 1 when there are errors or warnings, 2 for
bad input (no such file, not a trace). Several files are diagnosed one by one (seqs restart in
each file), each under its name.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING, TextIO

from p11spy.decoder.formats import NAMES

if TYPE_CHECKING:
    from p11spy.decoder.diagnose import Finding

WIDTH = 100


def _wrap(label: str, text: str) -> list[str]:
    head = f"  {label + ':':<12}"
    return textwrap.wrap(text, WIDTH, initial_indent=head,
                         subsequent_indent=" " * len(head)) or [head.rstrip()]


def finding_lines(f: Finding) -> list[str]:
    lines = [f"[{f.severity}] {f.title}  ({f.rule})"]
    lines += _wrap("why", f.explanation)
    if f.evidence:
        lines.append("  evidence:")
        for e in f.evidence:
            lines += textwrap.wrap(e.what, WIDTH, initial_indent=f"    #{e.seq:<6} ",
                                   subsequent_indent=" " * 12)
        if f.more_evidence:
            lines.append(f"    ... and {f.more_evidence} more")
    lines += _wrap("what to do", f.action)
    for c in f.codes:
        lines += _code(c, "code")
    if f.related_codes:
        lines += _wrap("related", RELATED)
        for c in f.related_codes:
            lines += _code(c, "")
    return lines


RELATED = ("codes of the same situation that this trace does not show: what a card, OpenSC, "
           "IBM MQ or GSKit would report instead")


def _code(c: str, label: str) -> list[str]:
    from p11spy.decoder.diagnose import code_meaning

    meaning = code_meaning(c)
    if not meaning:
        return []
    text = f"{c}: {meaning} (p11spy explain {c})"
    if label:
        return _wrap(label, text)
    indent = " " * (2 + 12)
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent)


def _summary(findings: list[Finding]) -> str:
    from p11spy.decoder.diagnose import counts

    n = counts(findings)
    parts = [f"{v} {k}" + ("s" if v != 1 and k != "info" else "") for k, v in n.items() if v]
    return ", ".join(parts) if parts else "no findings"


def text(name: str, findings: list[Finding], out: TextIO) -> None:
    out.write(f"{name}: {_summary(findings)}\n")
    for f in findings:
        out.write("\n" + "\n".join(finding_lines(f)) + "\n")


def _diagnose(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from p11spy.decoder.diagnose import diagnose
    from p11spy.decoder.formats.registry import open_events

    out = sys.stdout
    options = {"token_label": args.token_label}
    worst = 0
    for i, name in enumerate(args.files):
        findings = diagnose(open_events(Path(name), args.format), options=options)
        if args.min_severity != "info":
            findings = [f for f in findings if f.severity != "info"]
        if args.json:
            for f in findings:
                out.write(json.dumps({**f.to_json(), "file": name}, ensure_ascii=False) + "\n")
        else:
            if i:
                out.write("\n")
            text(name, findings, out)
        if any(f.severity != "info" for f in findings):
            worst = 1
    return worst


class _HelpWithRules(argparse.Action):
    """-h/--help that names the rules at the end: only asking for help imports the rule table,
    so that the parser, which every p11spy command builds, stays cheap."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show this help message and the rules, and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from p11spy.decoder.diagnose import RULES

        parser.epilog = "rules: " + ", ".join(sorted(RULES))
        parser.print_help()
        parser.exit()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose", add_help=False, help="say what went wrong in a trace, with the evidence",
        description="Read a trace (p11spy, pkcs11-spy or OPENSC_DEBUG) and report what went "
                    "wrong, most important first: each finding with its severity, what it means, "
                    "the calls and APDUs that show it (by #seq, as `p11spy decode` numbers "
                    "them) and what to do. Exit status: 0 nothing above info, 1 errors or "
                    "warnings found, 2 bad input.")
    p.add_argument("-h", "--help", action=_HelpWithRules)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per finding and line (fields in the README)")
    p.add_argument("--token-label", metavar="LABEL",
                   help="the token label the client was configured with (MQ's GSK_PKCS11=..., "
                        "runmqakm -tokenlabel): say whether the module reported it")
    p.add_argument("--min-severity", choices=("info", "warning"), default="info",
                   help="leave out informational findings with 'warning'")
    p.add_argument("--format", choices=sorted(NAMES),
                   help="the trace's format (default: detect)")
    p.set_defaults(func=_diagnose)

