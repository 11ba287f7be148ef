"""The kitty-orch command line."""
