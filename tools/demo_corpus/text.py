"""Sentences to speak: real English and Spanish prose from Debian's fortune databases.

Sources (Debian 12 packages, read where they install):

- English — ``fortunes`` (fortune-mod's cookie files, BSD-3-Clause): quotations, proverbs,
  aphorisms and short prose from a curated list of files (:data:`ENGLISH_FILES`; the
  computer, IRC-log, ASCII-art, riddle and definition files are left out because they
  do not read as speech).
- Spanish — ``fortunes-es`` (GPL-2+ packaging; the maintainers state the quotations are
  presumed public domain): every ``*.fortunes`` file of ``/usr/share/games/fortunes/es``
  (quotations of authors, proverbs — *refranes* — and sayings). The ``fortunes-es-off``
  files are not used.

Processing, per fortune (the text between ``%`` lines): the attribution line
(``-- Author``) and everything after it is dropped; lines are joined; list markers
(``(1)``), quotes, brackets and emphasis marks are removed; `` -- `` becomes a comma;
the text is split into sentences at ``. ! ?`` followed by a capital letter (``¿ ¡``
included), and each sentence is kept when it has 3–40 words, only letters of the
language, digits and ordinary punctuation (no URLs, code, e-mail, ``* _ = < > | # $ /``),
few capitals (not shouting, not a header), no leading ``Name:`` dialogue label, and at
least one common function word of its language (a cheap language check). Duplicates
(case-insensitive) are dropped. The pools are in file order; :class:`TextStream`
shuffles them per use.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jsae.errors import MissingPathError
from tools.demo_corpus.tools import FORTUNES_EN_DIR, FORTUNES_ES_DIR

__all__ = [
    "ENGLISH_FILES",
    "TEXT_SOURCES",
    "Sentence",
    "TextStream",
    "clean_fortune",
    "load_sentences",
    "split_sentences",
]

#: English cookie files of the ``fortunes`` package used (prose, quotations, proverbs).
ENGLISH_FILES = (
    "art", "cookie", "education", "food", "fortunes", "goedel", "humorists", "kids", "law",
    "literature", "love", "magic", "medicine", "miscellaneous", "news", "people", "pets",
    "platitudes", "politics", "science", "songs-poems", "sports", "tao", "wisdom", "work",
)

#: Where each language's text comes from (for the data card).
TEXT_SOURCES = {
    "en": {
        "package": "fortunes",
        "path": str(FORTUNES_EN_DIR),
        "licence": "BSD-3-Clause (fortune-mod; /usr/share/doc/fortunes/copyright)",
        "content": "quotations, aphorisms, proverbs and short prose (fortune-mod cookie files)",
    },
    "es": {
        "package": "fortunes-es",
        "path": str(FORTUNES_ES_DIR),
        "licence": "GPL-2+ (packaging); quotations presumed public domain "
                   "(/usr/share/doc/fortunes-es/copyright)",
        "content": "Spanish quotations of authors, refranes (proverbs) and sayings",
    },
}

_FUNCTION_WORDS = {
    "en": frozenset("the a an of to and in is it you that he she was for on are with as his her they "
                    "i be at one have this from or by not but what all were we when your can there "
                    "if do will my no so who me him them their would about than then its".split()),
    "es": frozenset("de la que el en y a los se del las un por con no una su para es al lo como más "
                    "o pero sus le ha me si sin sobre este ya entre cuando todo esta ser son dos "
                    "también fue había era muy hay tiene nos ni yo tu te mi quien".split()),
}
_LETTERS = {
    "en": "a-zA-Z",
    "es": "a-zA-ZáéíóúüñÁÉÍÓÚÜÑ",
}
_PUNCT = r" .,;:!?'\-¿¡"
_BAD = re.compile(r"(https?:|www\.|@|[*_=<>|#$/\\{}\[\]~^&+%])")
_ATTRIBUTION = re.compile(r"^\s*(--|—|~~)\s*\S")
_LIST_MARK = re.compile(r"(^|\s)\(?\d{1,2}[).]\s")
_DIALOGUE = re.compile(r"^[A-Za-zÁÉÍÓÚÑáéíóúñ .]{1,20}:\s")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'¿¡(]*[A-ZÁÉÍÓÚÑ0-9¿¡])")
_ABBREV = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Sr|Sra|Srta|Dña|Jr|vs|etc|Prof|Gen|Col|Capt|Lt|Mt|No|Vol|Ud|Uds|Vd|Vds)\.$")


@dataclass(frozen=True)
class Sentence:
    """One sentence and where it comes from (``source``: ``package:file``)."""

    text: str
    lang: str
    source: str


def clean_fortune(raw: str) -> str:
    """One fortune's text → a single line of plain prose (attribution, quotes, marks removed)."""
    kept = []
    for line in raw.splitlines():
        if _ATTRIBUTION.match(line):
            break
        kept.append(line.strip())
    text = " ".join(x for x in kept if x)
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = re.sub(r"[\"\u201c\u201d\u00ab\u00bb]", "", text)
    text = re.sub(r"''+", "", text)
    text = _LIST_MARK.sub(" ", text)
    text = re.sub(r"\s+--\s+|\s*--\s*$", ", ", text)
    text = re.sub(r"\.(?:\s*\.){2,}", "...", text)
    text = re.sub(r"\s*(\.\.\.+|…)\s*(?=[a-záéíóúñ])", ", ", text)
    text = re.sub(r"\.\.\.+|…", ".", text)
    text = re.sub(r"[()]", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    text = re.sub(r",\s*([.!?])", r"\1", text)
    text = re.sub(r"([.!?])[.]+", r"\1", text)
    return text.strip(" ,;")


def split_sentences(text: str) -> list[str]:
    """Split a line of prose at sentence ends (``. ! ?`` + space + capital), keeping abbreviations."""
    parts = _SENTENCE_END.split(text)
    out: list[str] = []
    for p in parts:
        if out and _ABBREV.search(out[-1]):
            out[-1] = out[-1] + " " + p
        else:
            out.append(p)
    return [p.strip() for p in out if p.strip()]


def _keep(sentence: str, lang: str) -> str | None:
    s = sentence.strip(" '")
    if not s or _BAD.search(s) or _DIALOGUE.match(s):
        return None
    if re.search(rf"[^{_LETTERS[lang]}0-9{re.escape(_PUNCT)}]", s):
        return None
    words = re.findall(rf"[{_LETTERS[lang]}0-9']+", s)
    if not (3 <= len(words) <= 40):
        return None
    letters = [c for c in s if c.isalpha()]
    if not letters or sum(c.isupper() for c in letters) / len(letters) > 0.25:
        return None
    if not any(w.lower() in _FUNCTION_WORDS[lang] for w in words):
        return None
    if s[-1] not in ".!?":
        s = s.rstrip(",;:-") + "."
    return s[0].upper() + s[1:]


def _read_fortunes(path: Path) -> list[str]:
    raw = path.read_bytes().decode("utf-8", errors="replace")
    return [chunk for chunk in re.split(r"^%\s*$", raw, flags=re.M) if chunk.strip()]


def _files(lang: str) -> list[Path]:
    if lang == "en":
        return [FORTUNES_EN_DIR / name for name in ENGLISH_FILES if (FORTUNES_EN_DIR / name).is_file()]
    if lang == "es":
        return sorted(p for p in FORTUNES_ES_DIR.glob("*.fortunes") if p.is_file())
    raise ValueError(f"language must be 'en' or 'es'; got {lang!r}.")


_CACHE: dict[str, list[Sentence]] = {}


def load_sentences(lang: str) -> list[Sentence]:
    """All usable sentences of ``lang`` (``"en"`` or ``"es"``), in file order, deduplicated."""
    if lang in _CACHE:
        return _CACHE[lang]
    package = TEXT_SOURCES[lang]["package"]
    seen: set[str] = set()
    out: list[Sentence] = []
    for path in _files(lang):
        for fortune in _read_fortunes(path):
            for sent in split_sentences(clean_fortune(fortune)):
                kept = _keep(sent, lang)
                if kept is None or kept.lower() in seen:
                    continue
                seen.add(kept.lower())
                out.append(Sentence(kept, lang, f"{package}:{path.name}"))
    if not out:
        raise MissingPathError(f"no usable {lang} sentences found under {TEXT_SOURCES[lang]['path']}; "
                                 f"is the Debian package {package} installed?")
    _CACHE[lang] = out
    return out


class TextStream:
    """An endless, deterministic stream of sentences of one language.

    The pool is shuffled with ``seed``; sentences are handed out in that order and the
    pool is reshuffled when it runs out (``passes`` counts how often that happened).
    """

    def __init__(self, sentences: list[Sentence], seed: int):
        if not sentences:
            raise ValueError("TextStream needs at least one sentence.")
        self._pool = sentences
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(sentences))
        self._i = 0
        self.passes = 0

    def next(self) -> Sentence:
        if self._i >= len(self._order):
            self._order = self._rng.permutation(len(self._pool))
            self._i = 0
            self.passes += 1
        s = self._pool[int(self._order[self._i])]
        self._i += 1
        return s
