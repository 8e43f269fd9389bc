"""embed: audio → speaker embeddings → a jsae embedding store.

The export step of jsae (``jsae embed``). Modules, one concern each:

- :mod:`jsae.embed.audio`     reading any audio file as mono float32 at the encoder rate
- :mod:`jsae.embed.segment`   non-silent stretches → 4–8 s segments
- :mod:`jsae.embed.encoders`  speaker encoders (TitaNet via NeMo, resemblyzer) and their registry
- :mod:`jsae.embed.plan`      inputs (manifest / folder) → one planned row per segment
- :mod:`jsae.embed.export`    resumable, shardable embedding of the plan into the store
- :mod:`jsae.embed.describe`  per-segment acoustic descriptors (openSMILE eGeMAPS, silero-vad)
- :mod:`jsae.embed.cli`       the command lines (``jsae embed``, ``jsae describe``)

Importing this package imports nothing beyond the standard library; its public names load their
modules on first use (and none of them imports torch, NeMo, opensmile or silero-vad).
"""
# Public names are imported on first use (PEP 562): `jsae --help` builds the embed
# command's parser from jsae.embed.cli without loading pandas, SciPy or PyArrow.
from ..lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(("describe_store", "describe_waves"), "describe"),
    **dict.fromkeys(("ENCODERS", "Encoder", "EncoderLoadError", "get_encoder", "register"), "encoders"),
    **dict.fromkeys(("ExportConfig", "ExportError", "export_status", "finalize", "run_export"), "export"),
    "SegmentConfig": "segment",
}

__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderLoadError",
    "get_encoder",
    "register",
    "ExportConfig",
    "ExportError",
    "export_status",
    "finalize",
    "run_export",
    "SegmentConfig",
    "describe_store",
    "describe_waves",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
