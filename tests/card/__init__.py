"""The card bench: a virtual PIV card behind a real pcscd (see bench.py)."""
