"""Prefect flows that compose stages, and the `ltx2` command line."""
