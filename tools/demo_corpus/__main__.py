"""``python -m tools.demo_corpus``: build the demo corpus (see :mod:`tools.demo_corpus`)."""
from __future__ import annotations

import argparse
import sys

from jsae.errors import JsaeError, print_error
from tools.demo_corpus.build import SCALES, build_corpus
from tools.demo_corpus.tools import APT_PACKAGES, apt_command, ensure_tools


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.demo_corpus",
        description="Build a labelled 8 kHz telephone-speech corpus (SAE training audio, a language set and "
                    "a music set, as NeMo manifests) offline from Debian speech synthesisers, texts and music.",
        epilog="Needs these Debian packages: " + " ".join(APT_PACKAGES)
               + f". Install with: {apt_command()}",
    )
    p.add_argument("--out", help="output folder (audio/, *.jsonl manifests, corpus.json, DATA_CARD.md)")
    p.add_argument("--scale", default="tiny", choices=sorted(SCALES),
                   help="tiny: seconds, for tests; small: about a minute; full: the demo corpus (default: tiny)")
    p.add_argument("--seed", type=int, default=0, help="every random choice derives from it (default: 0)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--wav-encoding", default="pcm16", choices=("pcm16", "ulaw"),
                   help="pcm16: 16-bit PCM WAV; ulaw: 8-bit mu-law WAV, half the size (default: pcm16)")
    p.add_argument("--force", action="store_true", help="rebuild even if OUT already holds a corpus")
    p.add_argument("--check-tools", action="store_true",
                   help="only check that the Debian programs and data are installed")
    args = p.parse_args(argv)
    try:
        if args.check_tools:
            ensure_tools()
            print("all Debian programs and data for the corpus are installed")
            return 0
        if not args.out:
            p.error("--out is required (or pass --check-tools)")
        build_corpus(args.out, scale=args.scale, seed=args.seed, jobs=args.jobs,
                     wav_encoding=args.wav_encoding, force=args.force)
    except JsaeError as err:  # one line; anything else is a bug and keeps its traceback
        return print_error(err, "python -m tools.demo_corpus")
    return 0


if __name__ == "__main__":
    sys.exit(main())
