"""Straightforward reference implementations, written from the official code and the papers.

They are the oracles of the test suite and the baselines of ``benchmarks/``: slow, literal and
independent of ``blocks/``. Keys and maths follow the official repositories named in each file.
"""
