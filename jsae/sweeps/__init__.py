"""Sweep jobs and their command-line glue (the ``jsae`` command)."""
