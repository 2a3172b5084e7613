"""The rules of `p11spy diagnose`, one class each, registered in diagnose.RULES by @rule.

Importing this package registers them all. Each rule watches the events (with the Tracker's
facts as they were just before the event) and reports its findings when the trace ends; the
words come from decoder/knowledge/findings.py. A rule keeps only counters and the evidence it
will cite. One module per subject; common holds what several share.

The imports below are in registration order, which is the order of findings of equal rank:
keep it.
"""

# isort: off
from . import pins, logins, lifecycle, cards, tokens, keys, timing
# isort: on

__all__ = ["pins", "logins", "lifecycle", "cards", "tokens", "keys", "timing"]
