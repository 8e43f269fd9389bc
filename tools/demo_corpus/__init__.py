"""tools.demo_corpus: a labelled telephone-speech demo corpus made offline from Debian packages.

Three datasets shaped like the paper's (Sec. IV-A, Tables I–II), each a NeMo manifest that
``jsae embed --manifest`` reads:

- ``sae_train.jsonl``: SAE training audio (mostly English speech, some Spanish, some music);
- ``language.jsonl``: English / Spanish speech, ``gender`` tagged, ``split`` train/test;
- ``music.jsonl``: hold music / speech, ``split`` train/test.

Speech comes from espeak-ng, flite and festival voices (English and Spanish; many voices
of both genders), reading sentences from Debian's fortune databases (``fortunes``,
``fortunes-es``); music from ``singularity-music`` (CC BY-SA 3.0). All audio passes a
telephone channel (8 kHz, 300–3400 Hz, μ-law, line noise). See ``DATA_CARD.md`` in a built
corpus, and the modules:

- :mod:`tools.demo_corpus.tools`    the Debian packages, :func:`ensure_tools`
- :mod:`tools.demo_corpus.accents`  the espeak-ng accents and their weights
- :mod:`tools.demo_corpus.text`     sentences from the fortune files
- :mod:`tools.demo_corpus.voices`   speakers, voices, gender labels, synthesis
- :mod:`tools.demo_corpus.music`    music tracks and pieces
- :mod:`tools.demo_corpus.channel`  resampling, pauses, levels, telephone channel, segment count
- :mod:`tools.demo_corpus.build`    scales, planning, rendering, manifests
- :mod:`tools.demo_corpus.card`     ``corpus.json`` and ``DATA_CARD.md``

Command line: ``python -m tools.demo_corpus --out OUT --scale tiny|small|full [--seed N] [--jobs N]``.
"""
from tools.demo_corpus.build import CORPUS_VERSION, SCALES, CorpusExistsError, Scale, build_corpus
from tools.demo_corpus.tools import APT_PACKAGES, MissingToolsError, apt_command, ensure_tools

__all__ = [
    "APT_PACKAGES",
    "CORPUS_VERSION",
    "SCALES",
    "CorpusExistsError",
    "MissingToolsError",
    "Scale",
    "apt_command",
    "build_corpus",
    "ensure_tools",
]
