"""``python -m sweeps …`` in a checkout runs ``jsae …``.

The command line lives in :mod:`jsae.sweeps`: installed under the ``jsae`` name, a wheel puts
no top-level ``sweeps`` package into site-packages (ARCHITECTURE.md, "Layout").
"""
import runpy

runpy.run_module("jsae.sweeps", run_name="__main__", alter_sys=True)
