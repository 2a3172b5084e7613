"""`p11spy diagnose`: read a trace the way an expert would and say what went wrong, with
evidence. The engine is engine.py, the shared vocabulary base.py, the rules rules/; this front
door is what the command line and the viewer use."""

from p11spy.decoder.diagnose.base import RANK, SEVERITIES, Evidence, Finding, code_meaning
from p11spy.decoder.diagnose.engine import counts, diagnose
from p11spy.decoder.diagnose.rules import RULES

__all__ = ["RANK", "RULES", "SEVERITIES", "Evidence", "Finding", "code_meaning", "counts",
           "diagnose"]
