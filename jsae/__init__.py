"""jsae: whole grids of TopK sparse autoencoders on speaker embeddings, in JAX.

Public API (see each module's docstring for the math and the shapes):

* configs: :class:`SweepConfig`, :func:`load_config`
* the store: :func:`open_store`, :func:`write_store`
* the model: :mod:`jsae.sae` (pure functions for one model and one example)
* training: :func:`train_sweep`
* models: :class:`TopK` / :class:`ReluL1` (the activation of a model);
  :func:`load_sweep` → :class:`Sweep`, a :class:`ModelBatch` of every model of a run
  (``sweep.select(k=20)`` another batch, ``sweep.model(k=20, latent_size=200)`` one
  :class:`SAEModel`), read from the run's model files (``RUN/models/``)
* analysis: on a ModelBatch (or a Sweep) and a labelled store: :func:`probe` (:mod:`jsae.probing`),
  :func:`feature_split` (:mod:`jsae.splitting`), :func:`steer` and
  :func:`steer_latents` (:mod:`jsae.steering`), :func:`compare_sweeps`
  (:mod:`jsae.universality`), :func:`build_report` (:mod:`jsae.report`)
* before training: :func:`consistency` (:mod:`jsae.consistency`): is a label one
  direction for every speaker, so that one latent can carry it?
"""
__version__ = "0.1.0"

# Public names are imported on first use, so that importing one module (e.g.
# jsae.store from an export worker) does not load JAX.
_LAZY = {
    'ConfigError': 'config',
    'SweepConfig': 'config',
    'load_config': 'config',
    'EmbeddingStore': 'store',
    'InvalidEmbeddingsError': 'store',
    'StoreError': 'store',
    'open_store': 'store',
    'write_store': 'store',
    'SAEModel': 'models',
    'ModelBatch': 'models',
    'TopK': 'activation',
    'ReluL1': 'activation',
    'Sweep': 'sweep',
    'load_sweep': 'sweep',
    'train_sweep': 'train',
    'LabelledSplit': 'labelled',
    'load_labelled': 'labelled',
    'probe': 'probing',
    'SplitResult': 'splitting',
    'feature_split': 'splitting',
    'SteerResult': 'steering',
    'relative_similarity': 'steering',
    'steer': 'steering',
    'steer_latents': 'steering',
    'UniversalityResult': 'universality',
    'compare_sweeps': 'universality',
    'build_report': 'report',
    'config_path': 'resources',
    'demo_data_dir': 'resources',
    'ConsistencyResult': 'consistency',
    'consistency': 'consistency',
}

__all__ = [
    "__version__",
    "ConfigError",
    "SweepConfig",
    "load_config",
    "EmbeddingStore",
    "InvalidEmbeddingsError",
    "StoreError",
    "open_store",
    "write_store",
    "SAEModel",
    "ModelBatch",
    "TopK",
    "ReluL1",
    "Sweep",
    "load_sweep",
    "train_sweep",
    "ConsistencyResult",
    "consistency",
    "LabelledSplit",
    "load_labelled",
    "probe",
    "SplitResult",
    "feature_split",
    "SteerResult",
    "relative_similarity",
    "steer",
    "steer_latents",
    "UniversalityResult",
    "compare_sweeps",
    "build_report",
    "config_path",
    "demo_data_dir",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jsae' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
