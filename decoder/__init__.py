"""p11spy: reading traces into events and rendering them."""
