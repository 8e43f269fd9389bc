"""Speakers and voices: who speaks, with which synthesiser, and how the gender label is known.

Two levels:

- A :class:`Speaker` is one *timbre*: an espeak-ng voice variant (its formants, pitch
  range, breathiness — ``voices/!v/<name>`` in espeak-ng-data), or the human whose
  recordings a flite/festival voice was built from (CMU's ``kal`` speaker is behind
  flite ``kal``, flite ``kal16`` and festival ``kal_diphone``; ``slt`` behind flite ``slt``
  and festival ``cmu_us_slt_arctic_hts``). Near-identical espeak-ng variants share a
  ``family`` (``steph``/``steph2``/``steph3``, ``linda``/``belinda``, ``iven``…``iven4``,
  ``klatt``…``klatt6``, …). **Families are the unit of every split**: a family belongs to
  exactly one of sae_train, language/train, language/test, music/train, music/test.
- A :class:`Voice` is a speaker rendered with fixed settings: engine, language voice
  (accent: ``en-us``, ``es-419``), espeak-ng pitch ``-p`` and rate
  ``-s``, flite/festival duration stretch and mean F0, and ``alpha``, a vocal-tract-length
  factor (the waveform is resampled as if recorded at ``alpha`` × its rate, which scales
  formants and pitch by ``alpha``; kept within ±7 % so the gender stays). Every voice has
  a stable id that spells all of this, e.g. ``espeak-ng:es-419+f2:p55:s170:a1.03``.

How gender is known (``gender_basis``):

- espeak-ng variants with a ``gender`` line: that line (``declared``);
- espeak-ng variants without one: their ``pitch`` line (base–range in Hz; all kept ones are
  ≤ 130 Hz at the base, the male range) or, with no pitch line, espeak-ng's default male
  pitch 82–118 Hz (``pitch``); variants whose gender is unclear (a child's voice ``zac``,
  ``shelby`` 100–210 Hz, ``Nguyen``), robotic, whispered or effect variants
  (``robosoft*``, ``UniRobot``, ``anikaRobot``, ``Demonic``, ``whisper``, ``whisperf``,
  ``caleb`` [unvoiced], ``Tweaky``, ``Mr serious``, ``RicishayMax*``, ``boris``, ``fast``,
  ``max``) are not used;
- flite/festival voices: the documented sex of the recorded speaker (CMU ``kal``, ``awb``,
  ``rms``, ``ked``: male; ``slt``: female).

The builder also measures each voice's median F0 (:func:`tools.demo_corpus.channel.median_f0`)
and reports it per gender in the data card as a check of these labels.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jsae.errors import JsaeError
from tools.demo_corpus.accents import ENGLISH_ACCENTS, SPANISH_ACCENTS
from tools.demo_corpus.tools import espeak_data_dir

__all__ = [
    "ESPEAK_VARIANTS",
    "NON_ESPEAK_SPEAKERS",
    "Speaker",
    "Voice",
    "SynthesisError",
    "espeak_speakers",
    "make_voice",
    "synthesize",
]

#: (variant, gender, family, gender basis) for every espeak-ng variant used.
ESPEAK_VARIANTS: tuple[tuple[str, str, str, str], ...] = (
    # declared female
    ("Alicia", "female", "Alicia", "declared"),
    ("Andrea", "female", "Andrea", "declared"),
    ("Annie", "female", "Annie", "declared"),
    ("anika", "female", "anika", "declared"),
    ("aunty", "female", "aunty", "declared"),
    ("linda", "female", "linda", "declared"),
    ("belinda", "female", "linda", "declared"),
    ("f1", "female", "f1", "declared"),
    ("f2", "female", "f2", "declared"),
    ("f3", "female", "f3", "declared"),
    ("f4", "female", "f4", "declared"),
    ("f5", "female", "f5", "declared"),
    ("grandma", "female", "grandma", "declared"),
    ("steph", "female", "steph", "declared"),
    ("steph2", "female", "steph", "declared"),
    ("steph3", "female", "steph", "declared"),
    # declared male
    ("Andy", "male", "Andy", "declared"),
    ("AnxiousAndy", "male", "Andy", "declared"),
    ("Denis", "male", "Denis", "declared"),
    ("Diogo", "male", "Diogo", "declared"),
    ("Henrique", "male", "Henrique", "declared"),
    ("Hugo", "male", "Hugo", "declared"),
    ("Lee", "male", "Lee", "declared"),
    ("Marco", "male", "Marco", "declared"),
    ("Storm", "male", "Storm", "declared"),
    ("antonio", "male", "antonio", "declared"),
    ("croak", "male", "croak", "declared"),
    ("m1", "male", "m1", "declared"),
    ("m2", "male", "m2", "declared"),
    ("m3", "male", "m3", "declared"),
    ("m4", "male", "m4", "declared"),
    ("m5", "male", "m5", "declared"),
    ("m6", "male", "m6", "declared"),
    ("m7", "male", "m7", "declared"),
    ("m8", "male", "m8", "declared"),
    ("michel", "male", "michel", "declared"),
    ("miguel", "male", "miguel", "declared"),
    ("sandro", "male", "sandro", "declared"),
    ("travis", "male", "travis", "declared"),
    ("victor", "male", "victor", "declared"),
    # male by pitch line (no gender line)
    ("Alex", "male", "Alex", "pitch"),
    ("Gene", "male", "Gene", "pitch"),
    ("Gene2", "male", "Gene", "pitch"),
    ("Jacky", "male", "Jacky", "pitch"),
    ("Mario", "male", "Mario", "pitch"),
    ("Michael", "male", "Michael", "pitch"),
    ("Mike", "male", "Mike", "pitch"),
    ("announcer", "male", "announcer", "pitch"),
    ("david", "male", "david", "pitch"),
    ("ed", "male", "ed", "pitch"),
    ("grandpa", "male", "grandpa", "pitch"),
    ("gustave", "male", "gustave", "pitch"),
    ("iven", "male", "iven", "pitch"),
    ("iven2", "male", "iven", "pitch"),
    ("iven3", "male", "iven", "pitch"),
    ("iven4", "male", "iven", "pitch"),
    ("john", "male", "john", "pitch"),
    ("kaukovalta", "male", "kaukovalta", "pitch"),
    ("marcelo", "male", "marcelo", "pitch"),
    ("norbert", "male", "norbert", "pitch"),
    ("pablo", "male", "pablo", "pitch"),
    ("paul", "male", "paul", "pitch"),
    ("pedro", "male", "pedro", "pitch"),
    ("quincy", "male", "quincy", "pitch"),
    ("rob", "male", "rob", "pitch"),
    ("robert", "male", "robert", "pitch"),
    # male by espeak-ng's default pitch (klatt-synthesis variants without a pitch line)
    ("klatt", "male", "klatt", "default pitch"),
    ("klatt2", "male", "klatt", "default pitch"),
    ("klatt3", "male", "klatt", "default pitch"),
    ("klatt4", "male", "klatt", "default pitch"),
    ("klatt5", "male", "klatt", "default pitch"),
    ("klatt6", "male", "klatt", "default pitch"),
    ("adam", "male", "adam", "default pitch"),
    ("benjamin", "male", "benjamin", "default pitch"),
    ("edward", "male", "edward", "default pitch"),
    ("edward2", "male", "edward", "default pitch"),
)

_BASIS_TEXT = {
    "declared": "espeak-ng variant file declares it (gender line)",
    "pitch": "espeak-ng variant file has no gender line; its pitch line is in the male range",
    "default pitch": "espeak-ng variant file has no gender or pitch line; espeak-ng's default pitch "
                     "(82-118 Hz) is male",
}


@dataclass(frozen=True)
class Speaker:
    """One timbre (see module doc). ``engines``: ``(engine, engine voice)`` pairs that render it."""

    id: str
    gender: str
    gender_basis: str
    family: str
    engines: tuple[tuple[str, str], ...]
    langs: tuple[str, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["engines"] = [f"{e}:{v}" for e, v in self.engines]
        return d


NON_ESPEAK_SPEAKERS: tuple[Speaker, ...] = (
    Speaker("cmu-kal", "male", "recorded speaker Kevin A. Lenzo (CMU), male", "cmu-kal",
            (("flite", "kal"), ("flite", "kal16"), ("festival", "kal_diphone")), ("en",)),
    Speaker("cmu-awb", "male", "recorded speaker Alan W. Black (CMU ARCTIC awb), male", "cmu-awb",
            (("flite", "awb"),), ("en",)),
    Speaker("cmu-rms", "male", "recorded speaker rms (CMU ARCTIC), male", "cmu-rms",
            (("flite", "rms"),), ("en",)),
    Speaker("cmu-slt", "female", "recorded speaker slt (CMU ARCTIC), female", "cmu-slt",
            (("flite", "slt"), ("festival", "cmu_us_slt_arctic_hts")), ("en",)),
    Speaker("cstr-ked", "male", "recorded speaker ked (festvox ked diphones), male", "cstr-ked",
            (("festival", "ked_diphone"),), ("en",)),
)


def espeak_speakers() -> list[Speaker]:
    """The espeak-ng variants of :data:`ESPEAK_VARIANTS` that this espeak-ng installs."""
    data = espeak_data_dir()
    vdir = data / "voices" / "!v" if data is not None else None
    out = []
    for variant, gender, family, basis in ESPEAK_VARIANTS:
        if vdir is not None and not (vdir / variant).is_file():
            continue
        out.append(Speaker(f"espeak-ng:{variant}", gender, _BASIS_TEXT[basis], f"espeak-ng:{family}",
                           (("espeak-ng", variant),), ("en", "es")))
    return out


@dataclass(frozen=True)
class Voice:
    """A speaker with fixed synthesis settings (see module doc); ``id`` spells them all."""

    id: str
    speaker: str
    family: str
    gender: str
    lang: str
    engine: str
    base: str
    variant: str | None = None
    pitch: int | None = None
    rate: int | None = None
    stretch: float = 1.0
    f0_mean: int | None = None
    alpha: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def _pick(rng: np.random.Generator, weighted) -> str:
    names = [n for n, _ in weighted]
    w = np.array([p for _, p in weighted], dtype=float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def make_voice(speaker: Speaker, lang: str, rng: np.random.Generator, engine_index: int = 0) -> Voice:
    """Draw one voice of ``speaker`` speaking ``lang`` (settings from ``rng``).

    ``engine_index`` picks among the speaker's engines (cycled), so several voices of a
    flite/festival speaker use all its renderings.
    """
    if lang not in speaker.langs:
        raise ValueError(f"speaker {speaker.id} does not speak {lang!r} (speaks {speaker.langs}).")
    engine, name = speaker.engines[engine_index % len(speaker.engines)]
    if engine == "espeak-ng":
        base = _pick(rng, ENGLISH_ACCENTS if lang == "en" else SPANISH_ACCENTS)
        pitch = int(rng.integers(38, 71)) if speaker.gender == "female" else int(rng.integers(30, 63))
        rate = int(rng.integers(140, 196))
        alpha = round(float(rng.uniform(0.94, 1.06)), 2)
        vid = f"espeak-ng:{base}+{name}:p{pitch}:s{rate}:a{alpha:.2f}"
        return Voice(vid, speaker.id, speaker.family, speaker.gender, lang, engine, base, name,
                     pitch=pitch, rate=rate, alpha=alpha)
    stretch = round(float(rng.uniform(0.9, 1.15)), 2)
    alpha = round(float(rng.uniform(0.93, 1.07)), 2)
    if engine == "flite":
        lo, hi = (100, 136) if speaker.gender == "male" else (165, 216)
        f0 = int(rng.integers(lo, hi))
        vid = f"flite:{name}:d{stretch:.2f}:f{f0}:a{alpha:.2f}"
        return Voice(vid, speaker.id, speaker.family, speaker.gender, lang, engine, name,
                     stretch=stretch, f0_mean=f0, alpha=alpha)
    if engine == "festival":
        vid = f"festival:{name}:d{stretch:.2f}:a{alpha:.2f}"
        return Voice(vid, speaker.id, speaker.family, speaker.gender, lang, engine, name,
                     stretch=stretch, alpha=alpha)
    raise ValueError(f"unknown engine {engine!r}.")


class SynthesisError(JsaeError, RuntimeError):
    """A synthesiser failed; the message has the command and its error output."""


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        sr, n, ch, width = w.getframerate(), w.getnframes(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(n)
    if width != 2:
        raise SynthesisError(f"{path}: expected 16-bit PCM from the synthesiser, got {8 * width}-bit.")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    return x, sr


def _run(cmd: list[str], **kw) -> None:
    p = subprocess.run(cmd, capture_output=True, timeout=600, **kw)
    if p.returncode != 0:
        err = (p.stderr or b"").decode("utf-8", "replace")[-800:]
        raise SynthesisError(f"{' '.join(cmd[:6])} … failed (exit {p.returncode}): {err}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize(voice: Voice, texts: list[str], workdir: str | os.PathLike | None = None) -> list[tuple[np.ndarray, int]]:
    """Speak each of ``texts`` with ``voice``; returns ``[(waveform float32 [T], sample_rate), ...]``.

    The waveforms are the synthesiser's raw output (its own rate: espeak-ng 22.05 kHz,
    flite 8 or 16 kHz, festival 16 or 32 kHz); ``alpha`` is applied later, when resampling.
    """
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        outs = [tmp / f"t{i}.wav" for i in range(len(texts))]
        if voice.engine == "festival":
            lines = [f"(voice_{voice.base})", f"(Parameter.set 'Duration_Stretch {voice.stretch})"]
            for text, out in zip(texts, outs):
                lines.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "
                             f"{_scheme_string(str(out))} 'riff)")
            script = tmp / "say.scm"
            script.write_text("\n".join(lines) + "\n", encoding="utf-8")
            _run(["festival", "--batch", str(script)])
        else:
            for i, (text, out) in enumerate(zip(texts, outs)):
                tf = tmp / f"t{i}.txt"
                tf.write_text(text + "\n", encoding="utf-8")
                if voice.engine == "espeak-ng":
                    cmd = ["espeak-ng", "-b", "1", "-v", f"{voice.base}+{voice.variant}", "-p", str(voice.pitch),
                           "-s", str(voice.rate), "-w", str(out), "-f", str(tf)]
                elif voice.engine == "flite":
                    cmd = ["flite", "-voice", voice.base, "--setf", f"duration_stretch={voice.stretch}",
                           "--setf", f"int_f0_target_mean={voice.f0_mean}", "-f", str(tf), "-o", str(out)]
                else:
                    raise ValueError(f"unknown engine {voice.engine!r}.")
                _run(cmd)
        results = []
        for text, out in zip(texts, outs):
            if not out.is_file():
                raise SynthesisError(f"{voice.id}: no audio was written for {text[:60]!r}.")
            results.append(_read_wav(out))
        return results
