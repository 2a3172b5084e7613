"""Comparing runs: what a call compares on (comparable.py), lining two runs up (align.py), and
`p11spy diff`'s result (diff.py)."""
