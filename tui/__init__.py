"""p11spy: the Textual viewer (`p11spy show`); see tui/README.md.

Only app.py and the widget modules import Textual; commands.py registers the subcommand
without it, and the indexes (trace_index, p11_index, event_index, view, search) are plain
Python that the tests and the benchmark use directly.
"""
