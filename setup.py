"""Shim for `--setup_file=./setup.py` on Dataflow; metadata lives in setup.cfg."""
from setuptools import setup

setup()
