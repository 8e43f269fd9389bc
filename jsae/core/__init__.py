"""The core math of one SAE: activations, specs, the model, its losses, the sparse path, normalisation.

Modules: :mod:`~jsae.core.kinds` (the activation kinds, no JAX), :mod:`~jsae.core.activation`,
:mod:`~jsae.core.spec`, :mod:`~jsae.core.sae` (one model, one example), :mod:`~jsae.core.loss`
(training losses, dense and sparse), :mod:`~jsae.core.sparse` (every custom differentiation
rule), :mod:`~jsae.core.normalize`. This package imports none of them itself, so the JAX-free
ones (kinds, normalize) load without JAX.
"""
