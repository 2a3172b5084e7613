"""The card station: a virtual PIV card behind a real pcscd (see station.py)."""
