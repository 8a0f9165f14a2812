"""Loaders that map public datasets onto the behavior-log schema."""
