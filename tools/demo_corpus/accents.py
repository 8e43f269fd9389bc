"""The espeak-ng language voices (accents) the corpus speaks, with their sampling weights.

:func:`~tools.demo_corpus.voices.make_voice` draws a voice's accent from these tables and
:func:`~tools.demo_corpus.tools.ensure_tools` checks that espeak-ng has each of them.
"""
from __future__ import annotations

__all__ = ["ENGLISH_ACCENTS", "SPANISH_ACCENTS"]

#: espeak-ng language voices (accents) and their sampling weights, as in a US call centre:
#: American English and Latin-American Spanish. espeak-ng also has British, Scottish,
#: Welsh, Lancastrian, Caribbean (``en``, ``en-gb-*``, ``en-029``) and Castilian (``es``)
#: voices; mixing them in (corpus version 1: 45 % en-us, the rest spread over six others;
#: es and es-419 half each) gives English a second, accent-sized spread that the
#: speaker encoder mixes with the language: with resemblyzer, a linear probe for language
#: on unseen speakers fell from 0.915 / 0.938 precision / recall to 0.844 / 0.911
#: (``jsae consistency``, language set of the full build), and the per-speaker language
#: shifts agreed less (0.43 → 0.36).
ENGLISH_ACCENTS = (("en-us", 1.0),)
SPANISH_ACCENTS = (("es-419", 1.0),)
