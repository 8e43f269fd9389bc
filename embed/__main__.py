"""``python -m embed …`` in a checkout runs ``jsae embed …``.

The export's code lives in :mod:`jsae.embed`: installed under the ``jsae`` name, a wheel puts
no top-level ``embed`` package into site-packages (ARCHITECTURE.md, "Layout").
"""
import runpy

runpy.run_module("jsae.embed", run_name="__main__", alter_sys=True)
