"""Run directories: what ``jsae sweep`` writes, read back without any training code.

:mod:`~jsae.runs.layout` (the names inside a run), :mod:`~jsae.runs.check` (what a run
directory may be), :mod:`~jsae.runs.lock` (one writer per run), :mod:`~jsae.runs.modelfiles`
(per-model safetensors + JSON), :mod:`~jsae.runs.checkpoint` (orbax, with checksums),
:mod:`~jsae.runs.load` (:func:`load_sweep` → :class:`Sweep`; :func:`load_run`).
This package imports none of them itself: reading model files needs neither JAX nor orbax.
"""
