"""Build the demo corpus: plan, render (optionally in parallel), write manifests and records.

The corpus has three datasets, as in the paper (Sec. IV-A, Tables I–II), each a NeMo
manifest next to its audio:

- ``sae_train.jsonl`` — SAE training audio, unlabelled for training (``lang``/``kind``
  kept for the data card): ≈ 84 % English speech, ≈ 11 % Spanish speech, ≈ 5 % music.
- ``language.jsonl`` — English / Spanish, ``gender`` tagged, ``split`` train/test; the test
  split has the same number of segments per language (Table I's balance), both splits
  ≈ 60 % female (Table I is female-heavy).
- ``music.jsonl`` — ``kind`` music / voice, ``split`` train/test (Table II's proportions).

**Targets are counted in segments**, the 4–8 s pieces ``jsae embed`` cuts with its default
segmenter (``joined`` mode: a recording's non-silent stretches concatenated, then cut):
:func:`tools.demo_corpus.channel.count_segments` runs :func:`jsae.embed.segment.segment_recording`
itself on the audio as written and read back at 16 kHz, so the counts are the exporter's.
Each class — a ``(dataset, split, kind, lang, gender)`` cell — renders
recordings in a fixed order until it holds its target; the last recording is shortened
at a turn boundary so the count is exact.

**Determinism.** Every random choice comes from ``numpy.random.default_rng`` seeded with
``seed`` and a stable hash of what is being drawn (a class, a speaker, a voice, a
recording). A class's recordings and texts depend only on that class, so the output is
the same for any ``jobs`` (workers render recordings; the main process accepts them in
order). The synthesisers, sox and the numpy/scipy channel are deterministic.

**Voice split policy** (see :mod:`tools.demo_corpus.voices`): espeak-ng variant *families*
are dealt, per gender and with ``seed``, to language/train, language/test, music/train,
music/test and sae_train; a family never appears in two of them. The five flite/festival
speakers (English only) are all in sae_train. The language set is spoken by espeak-ng only,
each of its speakers speaking both languages (separate voices), so that neither the
synthesiser nor the speaker tells the languages apart; language/train holds many more
speakers than language/test, because language generalises to unseen speakers only when it
is learnt from many. Music tracks: a seeded set of
tracks is reserved for music/test; the other tracks are shared by sae_train and
music/train, whose pieces alternate along each track (never the same stretch of audio).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import count
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from jsae.errors import BadValueError, JsaeError
from jsae.safety import check_deletable, check_writable_folder

from tools.demo_corpus.channel import (
    SAMPLE_RATE,
    WAV_ENCODINGS,
    compress_pauses,
    count_segments,
    median_f0,
    pcm16,
    set_level,
    telephone,
    to_8k,
)
from tools.demo_corpus.music import MUSIC_SOURCE, Piece, cut_pieces, decode_piece, list_tracks
from tools.demo_corpus.text import TEXT_SOURCES, TextStream, load_sentences
from tools.demo_corpus.tools import ensure_tools, tool_versions
from tools.demo_corpus.voices import (
    NON_ESPEAK_SPEAKERS,
    Speaker,
    Voice,
    espeak_speakers,
    make_voice,
    synthesize,
)

__all__ = ["CORPUS_VERSION", "SCALES", "Scale", "CorpusExistsError", "build_corpus", "stable_hash"]

#: 3: segments counted with jsae embed's default (joined) segmenter; 2: contiguous stretches
CORPUS_VERSION = "3"
MANIFESTS = ("sae_train", "language", "music")
SETS = ("sae_train", "language/train", "language/test", "music/train", "music/test")
GENDERS = ("female", "male")


@dataclass(frozen=True)
class Scale:
    """Sizes of one corpus scale. Segment targets are 4–8 s segments (see module doc).

    Attributes:
      sae: segments of sae_train per class: ``{"en": …, "es": …, "music": …}``.
      language_train / language_test: segments per language in each split.
      female_share: share of female segments in each language × split of the language set.
      music_train / music_test: ``{"music": …, "en": …, "es": …}`` (en/es: the voice class).
      families: espeak-ng families per set and gender, ``{set: (female, male)}``;
        sae_train gets ``sae_families`` or, when None, all families left. language/train
        gets many more families than language/test (7 + 16 against 3 + 6 in small/full):
        speaker timbre dominates a speaker embedding, and a language direction learnt from
        a few training speakers does not carry over to unseen ones (measured with
        resemblyzer: logistic-regression test accuracy about 0.85 with 3 + 6 training
        families, about 0.92 with 7 + 16).
      non_espeak: flite/festival speakers in sae_train (None: all five).
      voices_sae: English voices per sae_train espeak-ng speaker, ``(female, male)``.
      voices_sae_es: Spanish voices per sae_train espeak-ng speaker, ``(female, male)``.
      voices_non_espeak: voices per engine of each flite/festival speaker.
      voices_feature: voices per language per speaker in the language set; music voice
        speakers get this many English voices and one Spanish voice.
      turns: turns per recording (min, max); turn_seconds: planned speech per turn;
      short_turns: share of short turns (1–3 s: too short to be a segment on their own, as in a
        call; the joined segmenter joins them with the recording's other turns).
      piece_seconds: music piece lengths. music/test gets whole tracks (in seeded order) until
        they hold about 7.5 s of music per wanted segment; the other tracks are the pool.
    """

    name: str
    sae: dict
    language_train: int
    language_test: int
    female_share: float
    music_train: dict
    music_test: dict
    families: dict
    sae_families: tuple | None
    non_espeak: tuple | None
    voices_sae: tuple
    voices_non_espeak: int
    voices_feature: int
    voices_sae_es: tuple = (1, 1)
    turns: tuple = (2, 5)
    turn_seconds: tuple = (4.6, 13.0)
    short_turns: float = 0.15
    piece_seconds: tuple = (8.0, 16.0)


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        name="tiny",
        sae={"en": 12, "es": 4, "music": 2},
        language_train=6, language_test=4, female_share=0.5,
        music_train={"music": 2, "en": 2, "es": 1}, music_test={"music": 2, "en": 2, "es": 0},
        families={"language/train": (1, 1), "language/test": (1, 1), "music/train": (0, 1), "music/test": (1, 0)},
        sae_families=(1, 1), non_espeak=("cmu-kal", "cmu-slt"),
        voices_sae=(1, 1), voices_non_espeak=1, voices_feature=1,
        turns=(2, 3), turn_seconds=(4.6, 7.0), short_turns=0.15, piece_seconds=(8.0, 11.0),
    ),
    "small": Scale(
        name="small",
        sae={"en": 300, "es": 40, "music": 20},
        language_train=60, language_test=40, female_share=0.6,
        music_train={"music": 20, "en": 34, "es": 6}, music_test={"music": 30, "en": 26, "es": 4},
        families={"language/train": (7, 16), "language/test": (3, 6), "music/train": (1, 3), "music/test": (1, 3)},
        sae_families=None, non_espeak=None,
        voices_sae=(4, 1), voices_non_espeak=1, voices_feature=1,
    ),
    "full": Scale(
        name="full",
        sae={"en": 13250, "es": 1750, "music": 150},
        language_train=350, language_test=200, female_share=0.6,
        music_train={"music": 110, "en": 220, "es": 40}, music_test={"music": 200, "en": 170, "es": 30},
        families={"language/train": (7, 16), "language/test": (3, 6), "music/train": (1, 3), "music/test": (1, 3)},
        sae_families=None, non_espeak=None,
        voices_sae=(60, 15), voices_sae_es=(12, 4), voices_non_espeak=20, voices_feature=2,
    ),
}


def stable_hash(*parts) -> int:
    """A 63-bit hash of ``parts`` that does not change between runs (unlike ``hash``)."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _rng(seed: int, *parts) -> np.random.Generator:
    return np.random.default_rng([seed, stable_hash(*parts)])


# ----------------------------------------------------------------------------- planning

@dataclass(frozen=True)
class SpeechJob:
    """One speech recording to render: ``turns`` are texts spoken as one utterance each."""

    recording: str
    voice: Voice
    turns: tuple[str, ...]
    sources: tuple[str, ...]
    seed: int
    level_dbfs: float
    noise_dbfs: float


@dataclass(frozen=True)
class MusicJob:
    """One music recording: a piece of a track."""

    recording: str
    piece: Piece
    seed: int
    level_dbfs: float
    noise_dbfs: float


@dataclass
class Rendered:
    """A rendered recording: 8 kHz audio, turn intervals (s), segment count, median F0."""

    audio: np.ndarray
    turns: list[tuple[float, float]]
    segments: int
    f0: float | None
    speech_seconds: float


@dataclass
class ClassSpec:
    """One cell of a dataset, filled to ``target`` segments by ``jobs``."""

    dataset: str
    split: str
    kind: str
    lang: str | None
    gender: str | None
    target: int
    jobs: Callable[[], Iterator]
    voices: list = field(default_factory=list)
    tracks: list = field(default_factory=list)

    @property
    def key(self) -> str:
        return "/".join(x for x in (self.dataset, self.split, self.kind, self.lang, self.gender) if x)


def _chars_per_second(voice: Voice) -> float:
    if voice.engine == "espeak-ng":
        cps = 14.9 * voice.rate / 160.0
    elif voice.engine == "flite":
        cps = 17.0 / voice.stretch
    else:
        cps = 15.5 / voice.stretch
    return cps * voice.alpha


def _speech_jobs(key: str, voices: list[Voice], stream: TextStream, scale: Scale, seed: int) -> Iterator[SpeechJob]:
    rng = _rng(seed, "jobs", key)
    order = [voices[i] for i in rng.permutation(len(voices))]
    slug = key.replace("/", "-")
    for i in count():
        voice = order[i % len(order)]
        cps = _chars_per_second(voice)
        n_turns = int(rng.integers(scale.turns[0], scale.turns[1] + 1))
        turns, sources = [], []
        for _ in range(n_turns):
            if rng.random() < scale.short_turns:
                s = stream.next()
                words = s.text.rstrip(".!?").split()
                k = max(2, min(len(words), int(rng.uniform(1.0, 3.0) * cps / 6.0)))
                text = " ".join(words[:k]).rstrip(",;:") + "."
                srcs = [s.source]
            else:
                target = rng.uniform(*scale.turn_seconds) * cps
                parts, srcs = [], []
                while sum(len(p) + 1 for p in parts) < target:
                    s = stream.next()
                    parts.append(s.text)
                    srcs.append(s.source)
                text = " ".join(parts)
            turns.append(text)
            sources.extend(srcs)
        yield SpeechJob(
            recording=f"{slug}-{i:05d}", voice=voice, turns=tuple(turns), sources=tuple(dict.fromkeys(sources)),
            seed=int(rng.integers(2**62)), level_dbfs=round(float(rng.uniform(-23.0, -17.0)), 2),
            noise_dbfs=round(float(rng.uniform(-68.0, -60.0)), 2))


def _music_jobs(key: str, pieces_by_track: list[list[Piece]], seed: int) -> Iterator[MusicJob]:
    rng = _rng(seed, "jobs", key)
    slug = key.replace("/", "-")
    queues = [list(p) for p in pieces_by_track]
    i = 0
    while any(queues):
        for q in queues:
            if not q:
                continue
            piece = q.pop(0)
            yield MusicJob(recording=f"{slug}-{i:05d}", piece=piece, seed=int(rng.integers(2**62)),
                           level_dbfs=round(float(rng.uniform(-24.0, -18.0)), 2),
                           noise_dbfs=round(float(rng.uniform(-68.0, -60.0)), 2))
            i += 1


def allocate_families(scale: Scale, seed: int, speakers: list[Speaker]) -> dict[str, list[Speaker]]:
    """Deal espeak-ng families to the sets (see module doc); returns ``{set: [speakers]}``."""
    families: dict[str, list[Speaker]] = {}
    for s in speakers:
        families.setdefault(s.family, []).append(s)
    out: dict[str, list[Speaker]] = {k: [] for k in SETS}
    for gi, gender in enumerate(GENDERS):
        names = sorted(f for f, members in families.items() if members[0].gender == gender)
        rng = _rng(seed, "families", gender)
        names = [names[i] for i in rng.permutation(len(names))]
        pos = 0
        for set_name in SETS[1:]:
            n = scale.families.get(set_name, (0, 0))[gi]
            if pos + n > len(names):
                raise BadValueError(f"scale {scale.name}: not enough {gender} espeak-ng voice families "
                                 f"({len(names)}) for the requested split.")
            for f in names[pos:pos + n]:
                out[set_name].extend(families[f])
            pos += n
        rest = names[pos:]
        if scale.sae_families is not None:
            rest = rest[: scale.sae_families[gi]]
        for f in rest:
            out["sae_train"].extend(families[f])
    return out


def _voices_for(set_name: str, speakers: list[Speaker], langs_counts: Callable[[Speaker], dict],
                seed: int, taken: set[str]) -> list[Voice]:
    voices = []
    for sp in speakers:
        for lang, n in langs_counts(sp).items():
            for j in range(n):
                for attempt in range(100):
                    rng = _rng(seed, "voice", set_name, sp.id, lang, j, attempt)
                    v = make_voice(sp, lang, rng, engine_index=j)
                    if v.id not in taken:
                        break
                taken.add(v.id)
                voices.append(v)
    return voices


def plan_classes(scale: Scale, seed: int) -> tuple[list[ClassSpec], dict]:
    """The classes of all three datasets, in build order, and the allocation record."""
    espeak = espeak_speakers()
    alloc = allocate_families(scale, seed, espeak)
    non_espeak = [s for s in NON_ESPEAK_SPEAKERS if scale.non_espeak is None or s.id in scale.non_espeak]
    taken: set[str] = set()

    def sae_counts(sp: Speaker) -> dict:
        if sp.engines[0][0] != "espeak-ng":
            return {"en": scale.voices_non_espeak * len(sp.engines)}
        gi = GENDERS.index(sp.gender)
        return {"en": scale.voices_sae[gi], "es": scale.voices_sae_es[gi]}

    voices = {"sae_train": _voices_for("sae_train", alloc["sae_train"] + non_espeak, sae_counts, seed, taken)}
    for s in ("language/train", "language/test"):
        voices[s] = _voices_for(s, alloc[s], lambda sp: {"en": scale.voices_feature, "es": scale.voices_feature},
                                seed, taken)
    for s in ("music/train", "music/test"):
        voices[s] = _voices_for(s, alloc[s], lambda sp: {"en": scale.voices_feature, "es": 1}, seed, taken)

    sentences = {lang: load_sentences(lang) for lang in ("en", "es")}

    def stream(key: str, lang: str) -> TextStream:
        return TextStream(sentences[lang], stable_hash(seed, "text", key))

    # music: tracks → test tracks / shared pool; pieces alternate between sae_train and music/train
    tracks = list_tracks()
    rng = _rng(seed, "tracks")
    full_tracks = [t for t in tracks if "/" not in t.name]
    order = [full_tracks[i] for i in rng.permutation(len(full_tracks))]
    # music/test: tracks in seeded order until they hold ~7.5 s of music per wanted segment
    need = 7.5 * scale.music_test["music"]
    n_test = 0
    while n_test < len(order) - 1 and (n_test == 0 or sum(t.seconds - 6 for t in order[:n_test]) < need):
        n_test += 1
    test_tracks = order[:n_test]
    pool_tracks = order[n_test:] + [t for t in tracks if "/" in t.name]
    pieces = {t.name: cut_pieces(t, _rng(seed, "pieces", t.name), scale.piece_seconds) for t in tracks}
    music_sets = {
        "music/test": [pieces[t.name] for t in test_tracks],
        "sae_train": [pieces[t.name][0::2] for t in pool_tracks],
        "music/train": [pieces[t.name][1::2] for t in pool_tracks],
    }
    track_sets = {"music/test": [t.name for t in test_tracks], "sae_train": [t.name for t in pool_tracks],
                  "music/train": [t.name for t in pool_tracks]}

    classes: list[ClassSpec] = []

    def speech(dataset, split, lang, gender, target, pool, set_name):
        vs = [v for v in pool if v.lang == lang and (gender is None or v.gender == gender)]
        if target <= 0:
            return
        if not vs:
            raise BadValueError(f"scale {scale.name}: no voices for {dataset}/{split}/{lang}/{gender}.")
        key = "/".join(x for x in (dataset, split, "voice", lang, gender) if x)
        classes.append(ClassSpec(dataset, split, "voice", lang, gender, target,
                                 jobs=lambda key=key, vs=vs, lang=lang: _speech_jobs(key, vs, stream(key, lang), scale, seed),
                                 voices=vs))

    def music(dataset, split, target, set_name):
        if target <= 0:
            return
        key = f"{dataset}/{split}/music"
        classes.append(ClassSpec(dataset, split, "music", None, None, target,
                                 jobs=lambda key=key, ps=music_sets[set_name]: _music_jobs(key, ps, seed),
                                 tracks=track_sets[set_name]))

    speech("sae_train", "train", "en", None, scale.sae["en"], voices["sae_train"], "sae_train")
    speech("sae_train", "train", "es", None, scale.sae["es"], voices["sae_train"], "sae_train")
    music("sae_train", "train", scale.sae["music"], "sae_train")
    for split, per_lang in (("train", scale.language_train), ("test", scale.language_test)):
        female = int(round(per_lang * scale.female_share))
        for lang in ("en", "es"):
            speech("language", split, lang, "female", female, voices[f"language/{split}"], f"language/{split}")
            speech("language", split, lang, "male", per_lang - female, voices[f"language/{split}"], f"language/{split}")
    for split, t in (("train", scale.music_train), ("test", scale.music_test)):
        music("music", split, t["music"], f"music/{split}")
        speech("music", split, "en", None, t["en"], voices[f"music/{split}"], f"music/{split}")
        speech("music", split, "es", None, t["es"], voices[f"music/{split}"], f"music/{split}")

    record = {
        "families": {s: sorted({sp.family for sp in alloc[s]}) for s in SETS},
        "speakers": {s: [sp.id for sp in (alloc[s] + (non_espeak if s == "sae_train" else []))] for s in SETS},
        "speaker_info": {sp.id: sp.to_dict() for sp in espeak + list(NON_ESPEAK_SPEAKERS)},
        "voices": {s: [v.to_dict() for v in vs] for s, vs in voices.items()},
        "tracks": track_sets,
        "all_tracks": [asdict(t) for t in tracks],
        "text_pool": {lang: len(s) for lang, s in sentences.items()},
    }
    return classes, record


# ----------------------------------------------------------------------------- rendering

def render(job, encoding: str = "pcm16") -> Rendered:
    """Render one :class:`SpeechJob` or :class:`MusicJob` (runs in a worker); its segment count
    is taken on the audio as written with ``encoding``."""
    rng = np.random.default_rng(job.seed)
    if isinstance(job, MusicJob):
        x = decode_piece(job.piece)
        ramp = min(len(x) // 2, int(0.05 * SAMPLE_RATE))
        if ramp:
            w = np.linspace(0.0, 1.0, ramp, dtype=np.float32)
            x[:ramp] *= w
            x[-ramp:] *= w[::-1]
        lead = np.zeros(int(rng.uniform(0.2, 0.6) * SAMPLE_RATE), np.float32)
        tail = np.zeros(int(rng.uniform(0.2, 0.6) * SAMPLE_RATE), np.float32)
        rec = np.concatenate([lead, set_level(x, job.level_dbfs), tail])
        y = telephone(np.clip(rec, -1, 1), rng, job.noise_dbfs)
        start = len(lead) / SAMPLE_RATE
        return Rendered(y, [(start, start + len(x) / SAMPLE_RATE)], count_segments(y, encoding=encoding), None,
                        len(x) / SAMPLE_RATE)

    outs = synthesize(job.voice, list(job.turns))
    turns = [compress_pauses(to_8k(x, sr, job.voice.alpha), rng) for x, sr in outs]
    turns = [t for t in turns if t.size > 0]
    if not turns:
        return Rendered(np.zeros(SAMPLE_RATE, np.float32), [], 0, None, 0.0)
    f0 = median_f0(np.concatenate(turns))
    parts, intervals, pos = [], [], 0
    for k, t in enumerate(turns):
        sil = int(rng.uniform(0.3, 1.0) * SAMPLE_RATE) if k == 0 else int(rng.uniform(0.4, 1.5) * SAMPLE_RATE)
        parts.append(np.zeros(sil, np.float32))
        pos += sil
        parts.append(t)
        intervals.append((pos / SAMPLE_RATE, (pos + t.size) / SAMPLE_RATE))
        pos += t.size
    parts.append(np.zeros(int(rng.uniform(0.3, 1.0) * SAMPLE_RATE), np.float32))
    rec = np.clip(set_level(np.concatenate(parts), job.level_dbfs), -1.0, 1.0)
    y = telephone(rec, rng, job.noise_dbfs)
    speech = sum(t.size for t in turns) / SAMPLE_RATE
    return Rendered(y, intervals, count_segments(y, encoding=encoding), f0, speech)


def _truncate(r: Rendered, need: int, encoding: str = "pcm16") -> Rendered | None:
    """``r`` cut after its k-th turn (+ up to 0.5 s of what follows) holding exactly ``need`` segments."""
    for k in range(len(r.turns) - 1, 0, -1):
        end = r.turns[k - 1][1]
        nxt = r.turns[k][0]
        cut = int(round(min(end + 0.5, (end + nxt) / 2) * SAMPLE_RATE))
        audio = r.audio[:cut]
        n = count_segments(audio, encoding=encoding)
        if n == need:
            speech = sum(b - a for a, b in r.turns[:k])
            return Rendered(audio, r.turns[:k], n, r.f0, speech)
        if n < need:
            return None
    return None


# ----------------------------------------------------------------------------- writing

def _write_wav(path: Path, x: np.ndarray, encoding: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    if encoding == "ulaw":
        import soundfile as sf

        sf.write(str(path), x, SAMPLE_RATE, subtype="ULAW", format="WAV")
        return len(x)
    pcm = pcm16(x)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return len(pcm)


def _row(cls: ClassSpec, job, r: Rendered, rel: str, frames: int) -> dict:
    is_music = isinstance(job, MusicJob)
    v = None if is_music else job.voice
    return {
        "audio_filepath": rel,
        "duration": round(frames / SAMPLE_RATE, 6),
        "recording": job.recording,
        "dataset": cls.dataset,
        "split": cls.split,
        "kind": cls.kind,
        "lang": None if is_music else v.lang,
        "gender": None if is_music else v.gender,
        "voice": None if is_music else v.id,
        "speaker": None if is_music else v.speaker,
        "family": None if is_music else v.family,
        "engine": None if is_music else v.engine,
        "accent": None if is_music else v.base,
        "text_source": None if is_music else TEXT_SOURCES[v.lang]["package"],
        "music_source": MUSIC_SOURCE["package"] if is_music else None,
        "track": job.piece.track.name if is_music else None,
        "segments": r.segments,
        "n_turns": len(r.turns),
        "speech_seconds": round(r.speech_seconds, 3),
    }


def _detail(cls: ClassSpec, job, r: Rendered, turns_used: int) -> dict:
    d = {"recording": job.recording, "dataset": cls.dataset, "class": cls.key,
         "turns": [[round(a, 3), round(b, 3)] for a, b in r.turns]}
    if isinstance(job, MusicJob):
        d.update(track=job.piece.track.name, start=job.piece.start, seconds=job.piece.seconds)
    else:
        d.update(voice=job.voice.id, f0_hz=None if r.f0 is None else round(r.f0, 1),
                 texts=list(job.turns[:turns_used]), sources=list(job.sources))
    d.update(level_dbfs=job.level_dbfs, noise_dbfs=job.noise_dbfs)
    return d


class CorpusExistsError(JsaeError, RuntimeError):
    """``out`` holds a different corpus, or files that are not a corpus; the message says what to do."""


#: written into OUT when a build starts (kept): marks the folder as a corpus jsae made, finished or not
BUILD_MARKER = ".jsae-corpus"


def _corpus_files() -> list[str]:
    return [f"{m}.jsonl" for m in MANIFESTS] + ["recordings.jsonl", "corpus.json", "DATA_CARD.md"]


def _is_corpus_dir(out: Path) -> bool:
    """``out`` holds only what :func:`build_corpus` writes, and a build marked it as its own
    (``corpus.json`` or the build marker): a corpus, finished or interrupted."""
    known = set(_corpus_files()) | {"audio", BUILD_MARKER, "corpus.json.tmp"}
    entries = [p.name for p in out.iterdir()] if out.is_dir() and not out.is_symlink() else []
    return (bool(entries) and all(name in known for name in entries)
            and ((out / "corpus.json").is_file() or (out / BUILD_MARKER).is_file()))


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that is not new, empty or a corpus (its files would be replaced)."""
    try:
        check_writable_folder(out, what="a corpus built by `python -m tools.demo_corpus`", is_ours=_is_corpus_dir)
    except JsaeError as err:
        raise CorpusExistsError(str(err)) from None


def _clean(out: Path) -> None:
    """Delete a previous corpus in ``out`` (only what build_corpus writes; checked first)."""
    if (out / "audio").exists():
        try:
            check_deletable(out / "audio", what="a corpus audio folder", option="--out/audio",
                            is_ours=lambda p: _is_corpus_dir(out))
        except JsaeError as err:
            raise CorpusExistsError(str(err)) from None
        shutil.rmtree(out / "audio")
    for name in _corpus_files():
        if (out / name).is_file():
            (out / name).unlink()


def build_corpus(out: str | os.PathLike, scale: str | Scale = "tiny", seed: int = 0, jobs: int = 1,
                 wav_encoding: str = "pcm16", force: bool = False,
                 log: Callable[[str], None] | None = None) -> dict:
    """Build (or find up to date) the corpus in ``out``; returns the ``corpus.json`` record.

    Args:
      out: output folder (created): ``audio/``, the manifests, ``recordings.jsonl``,
        ``corpus.json``, ``DATA_CARD.md``.
      scale: ``tiny`` (seconds; tests), ``small`` (a minute) or ``full`` (the demo), or a
        :class:`Scale` (its ``name`` is recorded).
      seed: every random choice derives from it; same seed → same corpus.
      jobs: worker processes rendering recordings (1: in this process).
      wav_encoding: ``pcm16`` (16-bit PCM WAV) or ``ulaw`` (8-bit μ-law WAV, half the size;
        needs soundfile).
      force: rebuild even when ``out`` holds a corpus (of any scale/seed).
      log: progress lines (default: stderr).
    """
    from tools.demo_corpus.card import write_data_card

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if isinstance(scale, Scale):
        cfg = scale
    elif scale in SCALES:
        cfg = SCALES[scale]
    else:
        raise BadValueError(f"--scale must be one of {', '.join(SCALES)}; got {scale!r}.")
    scale = cfg.name
    if wav_encoding not in WAV_ENCODINGS:
        raise BadValueError(f"--wav-encoding must be pcm16 or ulaw; got {wav_encoding!r}.")
    if jobs < 1:
        raise BadValueError(f"--jobs must be >= 1; got {jobs}.")
    out = Path(out)
    _check_out(out)   # before anything else: never replace files that are not a corpus
    ensure_tools()
    request = {"version": CORPUS_VERSION, "scale": scale, "seed": int(seed), "wav_encoding": wav_encoding}
    record_path = out / "corpus.json"
    if record_path.is_file() and not force:
        old = json.loads(record_path.read_text(encoding="utf-8"))
        if {k: old.get(k) for k in request} == request:
            log(f"{out}: corpus (scale={scale}, seed={seed}) is already built; pass --force to rebuild.")
            return old
        raise CorpusExistsError(
            f"{out} holds a corpus built with scale={old.get('scale')} seed={old.get('seed')} "
            f"wav_encoding={old.get('wav_encoding')}; pass --force to replace it, or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    _clean(out)
    (out / BUILD_MARKER).write_text(json.dumps(request) + "\n", encoding="utf-8")

    t0 = time.time()
    classes, alloc = plan_classes(cfg, seed)
    log(f"planned {len(classes)} classes in {time.time() - t0:.1f} s (scale={scale}, seed={seed}, jobs={jobs})")

    rows: dict[str, list[dict]] = {m: [] for m in MANIFESTS}
    details: list[dict] = []
    shortfalls: dict[str, int] = {}
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) if jobs > 1 else None
    batch = max(1, 3 * jobs)
    try:
        for cls in classes:
            tc = time.time()
            have, rendered_n, accepted = 0, 0, 0
            it = cls.jobs()
            while have < cls.target:
                todo = []
                for job in it:
                    todo.append(job)
                    if len(todo) >= batch:
                        break
                if not todo:
                    break
                work = functools.partial(render, encoding=wav_encoding)
                results = executor.map(work, todo) if executor else map(work, todo)
                for job, r in zip(todo, results):
                    rendered_n += 1
                    if have >= cls.target or r.segments == 0:
                        continue
                    need = cls.target - have
                    if r.segments > need:
                        r = _truncate(r, need, wav_encoding)
                        if r is None:
                            continue
                    rel = f"audio/{cls.dataset}/{cls.split}/{job.recording}.wav"
                    frames = _write_wav(out / rel, r.audio, wav_encoding)
                    rows[cls.dataset].append(_row(cls, job, r, rel, frames))
                    details.append(_detail(cls, job, r, len(r.turns)))
                    have += r.segments
                    accepted += 1
                if rendered_n > 50 + 20 * cls.target:
                    break
            if have < cls.target:
                shortfalls[cls.key] = cls.target - have
                log(f"  {cls.key}: only {have} of {cls.target} segments (source exhausted)")
            log(f"  {cls.key}: {have} segments in {accepted} recordings ({time.time() - tc:.1f} s)")
    finally:
        if executor is not None:
            executor.shutdown()

    for name in MANIFESTS:
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows[name]:
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
    with open(out / "recordings.jsonl", "w", encoding="utf-8") as f:
        for d in details:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")

    from tools.demo_corpus.card import corpus_record

    record = corpus_record(request, cfg, classes, rows, details, alloc, shortfalls, tool_versions())
    write_data_card(out / "DATA_CARD.md", record)
    tmp = record_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(record_path)
    log(f"built {out} in {time.time() - t0:.1f} s: " + ", ".join(
        f"{m} {record['datasets'][m]['segments']} segments / {record['datasets'][m]['recordings']} recordings"
        for m in MANIFESTS))
    return record

