"""Training a grid of SAEs: rows and batches, the grid's step, evaluation, resuming, the loop.

:mod:`~jsae.training.data` · :mod:`~jsae.training.grid` · :mod:`~jsae.training.evaluate` ·
:mod:`~jsae.training.resume` · :mod:`~jsae.training.failures` · :mod:`~jsae.training.hooks` ·
:mod:`~jsae.training.memory` (the grid's memory, checked before anything is compiled) ·
:mod:`~jsae.training.loop` (:func:`train_sweep`). Run directories (:mod:`jsae.runs`) never
import this package.
"""
