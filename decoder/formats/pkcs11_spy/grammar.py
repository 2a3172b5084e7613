"""What the reader and the masker of pkcs11-spy logs both know of its words: the banner, the
function names it prints its own way, and the parameter names it prints.

Why one module: the masker finds a PIN by the parameter name the reader gives it; were the two
lists of names to drift apart, a PIN the reader shows would be one the masker does not mask.
"""

from __future__ import annotations

from p11spy.facts.pkcs11 import functions
from p11spy.facts.pkcs11.model import Function, Param, Role

BANNER = "OpenSC PKCS#11 spy"
# What `p11spy redact` writes into the stars after the banner: the reader then knows the PINs
# are masked, and says so instead of "secrets shown" (the line keeps its length).
REDACTED = "(redacted) "


def mark_redacted(line: str) -> str:
    """A banner line with REDACTED over the stars that follow the banner's words, when there
    are enough of them and the mark is not there yet; any other line as it is."""
    at = line.find(BANNER)
    if at < 0 or REDACTED in line:
        return line
    start = at + len(BANNER) + 1
    if line[start:start + len(REDACTED) + 1] != "*" * (len(REDACTED) + 1):
        return line
    return line[:start] + REDACTED + line[start + len(REDACTED):]
# Function names pkcs11-spy prints differently from the specification.
FUNCTION_ALIASES = {"SetOperationState": "C_SetOperationState"}  # enter() lacks the C_
# Output parameters pkcs11-spy names without their leading "p" ("hKey" for phKey).
_UNPREFIXED_OUT = frozenset({Role.HANDLE_OUT, Role.LENGTH_PTR, Role.ULONG_OUT})


def _spy_names(fn: Function) -> dict[str, Param]:
    """Parameter names as pkcs11-spy prints them, for one function."""
    m = {p.name: p for p in fn.params}
    for p in fn.params:
        if p.role in _UNPREFIXED_OUT and p.name.startswith("p"):
            m.setdefault(p.name[1:], p)
    return m


# Function name -> the parameters under every name pkcs11-spy prints them.
PARAMS: dict[str, dict[str, Param]] = {fn.name: _spy_names(fn) for fn in functions.FUNCTIONS}
