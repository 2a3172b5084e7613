"""p11spy: the Textual viewer."""
