"""Runners: one run in this process (``local``), a grid of cells in worker processes (``sweep``)."""
