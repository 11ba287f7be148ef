"""Foundations shared by every layer: the error tree (:mod:`kitty.errors`)."""
