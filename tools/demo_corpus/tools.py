"""The Debian programs and data the corpus is made from, and a check that they are installed.

Everything the builder reads comes from Debian ``main`` packages, so a corpus can be
rebuilt offline on any Debian 12 (bookworm) machine after::

    apt-get update && apt-get install -y espeak-ng flite festival festlex-cmu festlex-poslex \\
        festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox libsox-fmt-base \\
        fortunes fortunes-es singularity-music

:func:`ensure_tools` checks each program, voice, text and music file and raises
:class:`MissingToolsError` naming the missing packages and that command.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from jsae.errors import JsaeError
from tools.demo_corpus.accents import ENGLISH_ACCENTS, SPANISH_ACCENTS

__all__ = [
    "APT_PACKAGES",
    "FESTIVAL_VOICE_DIRS",
    "FORTUNES_EN_DIR",
    "FORTUNES_ES_DIR",
    "MUSIC_DIR",
    "MissingToolsError",
    "apt_command",
    "ensure_tools",
    "espeak_data_dir",
    "tool_versions",
]

#: Every Debian package the builder needs (Debian 12 "bookworm", section main).
APT_PACKAGES = (
    "espeak-ng",
    "flite",
    "festival",
    "festlex-cmu",
    "festlex-poslex",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "sox",
    "libsox-fmt-base",
    "fortunes",
    "fortunes-es",
    "singularity-music",
)

FORTUNES_EN_DIR = Path("/usr/share/games/fortunes")
FORTUNES_ES_DIR = Path("/usr/share/games/fortunes/es")
MUSIC_DIR = Path("/usr/share/games/singularity/music")
#: festival voice name → its folder (and the package that installs it)
FESTIVAL_VOICE_DIRS = {
    "kal_diphone": (Path("/usr/share/festival/voices/english/kal_diphone"), "festvox-kallpc16k"),
    "ked_diphone": (Path("/usr/share/festival/voices/english/ked_diphone"), "festvox-kdlpc16k"),
    "cmu_us_slt_arctic_hts": (Path("/usr/share/festival/voices/us/cmu_us_slt_arctic_hts"), "festvox-us-slt-hts"),
}
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")


class MissingToolsError(JsaeError, RuntimeError):
    """A program, voice or data file the corpus needs is not installed.

    ``packages`` lists the Debian packages to install.
    """

    def __init__(self, problems: list[str], packages: list[str]):
        self.problems = problems
        self.packages = packages
        super().__init__(
            "the demo corpus is made with Debian programs and data that are missing here: "
            f"{'; '.join(problems)}. Install them (as root) with: {apt_command(packages)}"
        )


def apt_command(packages=APT_PACKAGES) -> str:
    """The shell command that installs ``packages``."""
    return "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y " + " ".join(packages)


@functools.lru_cache(maxsize=1)
def espeak_data_dir() -> Path | None:
    """The espeak-ng data folder (``espeak-ng --version`` prints it), or None."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Data at:\s*(\S.*)$", out, flags=re.M)
    return Path(m.group(1).strip()) if m else None


def _run_ok(cmd: list[str]) -> tuple[bool, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return False, str(err)
    return p.returncode == 0, (p.stdout + p.stderr)


def ensure_tools(*, need_music: bool = True, need_text: bool = True) -> None:
    """Check every program, voice and data file the builder uses.

    Raises:
      MissingToolsError: naming what is missing, the Debian packages that provide it
        and the ``apt-get`` command that installs them.
    """
    problems: list[str] = []
    packages: list[str] = []

    def miss(what: str, *pkgs: str) -> None:
        problems.append(f"{what} (Debian package {', '.join(pkgs)})")
        for p in pkgs:
            if p not in packages:
                packages.append(p)

    if shutil.which("espeak-ng") is None:
        miss("program espeak-ng", "espeak-ng")
    else:
        data = espeak_data_dir()
        if data is None or not (data / "voices" / "!v").is_dir():
            miss("espeak-ng voice variants (voices/!v)", "espeak-ng-data")
        else:
            for lang, _ in ENGLISH_ACCENTS + SPANISH_ACCENTS:
                ok, _ = _run_ok(["espeak-ng", "-v", lang, "-w", os.devnull, "test"])
                if not ok:
                    miss(f"espeak-ng language voice {lang!r}", "espeak-ng-data")

    if shutil.which("flite") is None:
        miss("program flite", "flite")
    else:
        ok, out = _run_ok(["flite", "-lv"])
        have = set(out.split(":", 1)[-1].split()) if ok else set()
        for v in FLITE_VOICES:
            if v not in have:
                miss(f"flite voice {v}", "flite")

    if shutil.which("festival") is None:
        miss("program festival", "festival")
    for name, (folder, pkg) in FESTIVAL_VOICE_DIRS.items():
        if not folder.is_dir():
            miss(f"festival voice {name} ({folder})", pkg)
    if shutil.which("festival") is not None and not Path("/usr/share/festival/dicts/cmu").is_dir():
        miss("festival English lexicon (/usr/share/festival/dicts/cmu)", "festlex-cmu", "festlex-poslex")

    if shutil.which("sox") is None:
        miss("program sox", "sox", "libsox-fmt-base")
    elif need_music:
        ok, out = _run_ok(["sox", "-h"])
        fmts = out.split("AUDIO FILE FORMATS:", 1)[-1].splitlines()[0].split() if ok and "AUDIO FILE FORMATS:" in out else []
        if "ogg" not in fmts and "vorbis" not in fmts:
            miss("sox Ogg Vorbis support", "libsox-fmt-base")

    if need_text:
        if not (FORTUNES_EN_DIR / "wisdom").is_file():
            miss(f"English fortune files ({FORTUNES_EN_DIR})", "fortunes")
        if not FORTUNES_ES_DIR.is_dir() or not any(FORTUNES_ES_DIR.glob("*.fortunes")):
            miss(f"Spanish fortune files ({FORTUNES_ES_DIR})", "fortunes-es")
    if need_music and (not MUSIC_DIR.is_dir() or not any(MUSIC_DIR.rglob("*.ogg"))):
        miss(f"music tracks ({MUSIC_DIR})", "singularity-music")

    if problems:
        raise MissingToolsError(problems, packages)


def _dpkg_version(pkg: str) -> str | None:
    ok, out = _run_ok(["dpkg-query", "-W", "-f=${Version}", pkg])
    return out.strip() if ok and out.strip() else None


@functools.lru_cache(maxsize=1)
def tool_versions() -> dict[str, str | None]:
    """Installed versions of :data:`APT_PACKAGES` (``dpkg-query``), for the corpus record."""
    if shutil.which("dpkg-query") is None:
        return {p: None for p in APT_PACKAGES}
    return {p: _dpkg_version(p) for p in APT_PACKAGES}

