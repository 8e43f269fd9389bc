"""The corpus record (``corpus.json``) and its human-readable data card (``DATA_CARD.md``)."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from statistics import median

from jsae.embed.segment import SegmentConfig
from tools.demo_corpus.accents import ENGLISH_ACCENTS, SPANISH_ACCENTS
from tools.demo_corpus.channel import BAND, EMBED_SAMPLE_RATE, SAMPLE_RATE
from tools.demo_corpus.music import MUSIC_SOURCE
from tools.demo_corpus.text import ENGLISH_FILES, TEXT_SOURCES
from tools.demo_corpus.voices import ESPEAK_VARIANTS

__all__ = ["SYNTHESIZERS", "corpus_record", "write_data_card", "render_data_card"]

SYNTHESIZERS = {
    "espeak-ng": {"packages": ["espeak-ng", "espeak-ng-data"], "licence": "GPL-3.0-or-later",
                  "voices": f"formant synthesis; {len(ESPEAK_VARIANTS)} voice variants × English and Spanish language voices"},
    "flite": {"packages": ["flite"], "licence": "BSD-style CMU/Edinburgh licence (a few files GPL-2)",
              "voices": "kal, kal16, awb, rms, slt (diphone and clustergen voices of CMU speakers)"},
    "festival": {"packages": ["festival", "festlex-cmu", "festlex-poslex", "festvox-kallpc16k",
                              "festvox-kdlpc16k", "festvox-us-slt-hts"],
                 "licence": "X11-style free licences of CSTR (Edinburgh) and CMU; HTS voice: BSD-style",
                 "voices": "kal_diphone, ked_diphone, cmu_us_slt_arctic_hts"},
}

POLICY = (
    "espeak-ng voice variant families (near-identical variants grouped) are dealt per gender, with the seed, "
    "to language/train, language/test, music/train, music/test and sae_train; no family is in two of them, so "
    "feature-set voices never appear in sae_train and train/test speakers are disjoint. The flite/festival "
    "speakers (CMU kal, awb, rms, slt; ked; English only) are all in sae_train. In the language set every "
    "speaker speaks both languages and only espeak-ng is used, so language is not confounded with speaker or "
    "synthesiser. language/train gets more families than language/test (see the voices table): speaker "
    "timbre dominates a speaker embedding, so a language direction that holds for unseen speakers has to be "
    "learnt from many speakers. Music: a seeded set of tracks is reserved for music/test; the remaining "
    "tracks are shared by sae_train and music/train with alternating, non-overlapping pieces."
)

AUDIO = (
    "Speech: each turn (one or more sentences) is synthesised as one utterance, resampled to 8 kHz with a "
    "vocal-tract-length factor alpha (0.93-1.07), trimmed, and its synthesiser pauses longer than 0.2 s are "
    "shortened to 0.06-0.16 s so a turn is one non-silent stretch. A recording is one voice: 2-5 turns "
    "(about 15 % of them short, 1-3 s, below the 4 s segment minimum on their own) separated by 0.4-1.5 s of silence, with "
    "0.3-1.0 s before and after, levelled to -23..-17 dBFS (speech frames). Music: 8-16 s pieces of a track, "
    "50 ms fades, 0.2-0.6 s silence around, levelled to -24..-18 dBFS. Then every recording goes through the "
    "telephone channel: white noise at -68..-60 dBFS, 300-3400 Hz band-pass (Butterworth), 8-bit mu-law "
    "(mu = 255) encode/decode, the band-pass again (receive side), clip. Files: 8 kHz mono WAV."
)


def _seconds(rows) -> float:
    return sum(r["duration"] for r in rows)


def corpus_record(request: dict, cfg, classes, rows: dict, details: list[dict], alloc: dict,
                  shortfalls: dict, tools: dict) -> dict:
    """Everything worth knowing about a built corpus, as a JSON-able dict."""
    f0_by_voice = defaultdict(list)
    for d in details:
        if d.get("f0_hz") is not None:
            f0_by_voice[d["voice"]].append(d["f0_hz"])
    datasets = {}
    for name, rs in rows.items():
        cls_stats = {}
        for cls in classes:
            if cls.dataset != name:
                continue
            crs = [r for r in rs if r["split"] == cls.split and r["kind"] == cls.kind
                   and (cls.lang is None or r["lang"] == cls.lang) and (cls.gender is None or r["gender"] == cls.gender)]
            cls_stats[cls.key] = {
                "target": cls.target, "segments": sum(r["segments"] for r in crs), "recordings": len(crs),
                "seconds": round(_seconds(crs), 2),
                "voices": len({r["voice"] for r in crs if r["voice"]}),
                "speakers": len({r["speaker"] for r in crs if r["speaker"]}),
                "tracks": len({r["track"] for r in crs if r["track"]}),
            }
        table = defaultdict(Counter)
        for r in rs:
            label = "music" if r["kind"] == "music" else (
                f"{r['lang']}/{r['gender']}" if name == "language" else f"voice/{r['lang']}")
            table[r["split"]][label] += r["segments"]
        datasets[name] = {
            "manifest": f"{name}.jsonl",
            "recordings": len(rs),
            "segments": sum(r["segments"] for r in rs),
            "hours": round(_seconds(rs) / 3600, 3),
            "speech_hours": round(sum(r["speech_seconds"] for r in rs if r["kind"] == "voice") / 3600, 3),
            "segments_by_split": {s: dict(sorted(c.items())) for s, c in sorted(table.items())},
            "segments_by_engine": dict(sorted(Counter(
                {e: sum(r["segments"] for r in rs if r["engine"] == e) for e in {r["engine"] for r in rs if r["engine"]}}).items())),
            "female_share_of_speech": round(
                sum(r["segments"] for r in rs if r["gender"] == "female")
                / max(1, sum(r["segments"] for r in rs if r["kind"] == "voice")), 3),
            "classes": cls_stats,
        }

    voices_used = {}
    for name, rs in rows.items():
        for r in rs:
            if not r["voice"]:
                continue
            v = voices_used.setdefault(r["voice"], {
                "voice": r["voice"], "speaker": r["speaker"], "family": r["family"], "engine": r["engine"],
                "lang": r["lang"], "gender": r["gender"], "set": f"{name}/{r['split']}" if name != "sae_train" else name,
                "recordings": 0, "segments": 0})
            v["recordings"] += 1
            v["segments"] += r["segments"]
    for vid, v in voices_used.items():
        v["f0_hz"] = round(median(f0_by_voice[vid]), 1) if f0_by_voice.get(vid) else None

    inventory = defaultdict(lambda: defaultdict(lambda: {"speakers": set(), "voices": 0}))
    for v in voices_used.values():
        cell = inventory[v["set"]][f"{v['lang']}/{v['gender']}"]
        cell["speakers"].add(v["speaker"])
        cell["voices"] += 1
    inventory_out = {s: {k: {"speakers": len(c["speakers"]), "voices": c["voices"]} for k, c in sorted(cells.items())}
                     for s, cells in sorted(inventory.items())}
    f0 = {}
    for g in ("female", "male"):
        vals = [v["f0_hz"] for v in voices_used.values() if v["gender"] == g and v["f0_hz"]]
        if vals:
            f0[g] = {"voices": len(vals), "median_hz": round(median(vals), 1), "min_hz": min(vals), "max_hz": max(vals)}

    sets_families = defaultdict(set)
    for v in voices_used.values():
        sets_families[v["set"]].add(v["family"])
    overlaps = {}
    names = sorted(sets_families)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            overlaps[f"{a} & {b}"] = sorted(sets_families[a] & sets_families[b])

    used_sources = Counter()
    for d in details:
        for s in d.get("sources", []):
            used_sources[s.split(":")[0]] += 1
    text = {}
    for lang, src in TEXT_SOURCES.items():
        text[lang] = dict(src, sentences_in_pool=alloc["text_pool"][lang])
    text["en"]["files"] = list(ENGLISH_FILES)
    text["es"]["files"] = "all *.fortunes of /usr/share/games/fortunes/es (not the -off section)"
    tracks_used = defaultdict(set)
    for name, rs in rows.items():
        for r in rs:
            if r["track"]:
                tracks_used[f"{name}/{r['split']}" if name != "sae_train" else name].add(r["track"])

    return {
        **request,
        "sample_rate": SAMPLE_RATE,
        "band_hz": list(BAND),
        "segmentation": {**SegmentConfig().to_dict(), "sample_rate": EMBED_SAMPLE_RATE},
        "scale_config": asdict(cfg),
        "datasets": datasets,
        "voice_inventory": inventory_out,
        "f0_check": f0,
        "family_overlaps": overlaps,
        "families": alloc["families"],
        "voices": sorted(voices_used.values(), key=lambda v: (v["set"], v["voice"])),
        "speakers": alloc["speaker_info"],
        "sources": {
            "text": text,
            "music": dict(MUSIC_SOURCE, tracks={k: sorted(v) for k, v in sorted(tracks_used.items())},
                          all_tracks=alloc["all_tracks"]),
            "synthesizers": SYNTHESIZERS,
        },
        "accents": {"en": [list(a) for a in ENGLISH_ACCENTS], "es": [list(a) for a in SPANISH_ACCENTS]},
        "split_policy": POLICY,
        "audio": AUDIO,
        "shortfalls": shortfalls,
        "debian_packages": tools,
    }


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def render_data_card(rec: dict) -> str:
    """``DATA_CARD.md`` text for a :func:`corpus_record`."""
    ds = rec["datasets"]
    L = []
    L.append("# Demo corpus: data card\n")
    L.append(f"Built with `python -m tools.demo_corpus --scale {rec['scale']} --seed {rec['seed']}` "
             f"(corpus format {rec['version']}). Every file here is generated offline from Debian packages; "
             "rebuilding with the same scale and seed on the same package versions gives the same corpus.\n")
    L.append("Synthetic speech (three speech synthesisers) and recorded game music, passed through a "
             "telephone channel, arranged as the three datasets of *Sparse Autoencoder Insights on Voice "
             "Embeddings* (Sec. IV-A): SAE training audio, a language feature set (Table I) and a hold-music "
             "feature set (Table II). Counts are **segments**: the 4–8 s pieces `jsae embed --min-keep 4` cuts "
             "with its segmenter, `joined` mode (a recording's non-silent stretches concatenated, silence "
             "removed, then cut; a segment may span several utterances), counted by running that segmenter "
             "on the written audio at 16 kHz.\n")
    L.append("## Contents\n")
    L.append(_table(["manifest", "recordings", "segments", "audio hours", "speech hours"],
                    [[f"`{d['manifest']}`", d["recordings"], d["segments"], d["hours"], d["speech_hours"]]
                     for d in ds.values()]))
    L.append("\nManifest lines (NeMo format, paths relative to the manifest): `audio_filepath`, `duration`, "
             "`recording`, `dataset`, `split`, `kind` (voice/music), `lang` (en/es), `gender` (female/male), "
             "`voice`, `speaker`, `family`, `engine`, `accent`, `text_source`, `music_source`, `track`, "
             "`segments` (expected 4–8 s segments), `n_turns`, `speech_seconds`; null where not applicable. "
             "`recordings.jsonl` has each recording's turn times, texts, text files, level, noise and median F0.\n")

    lt = ds["language"]["segments_by_split"]
    cols = ["en/female", "en/male", "es/female", "es/male"]
    L.append("### language (cf. Table I)\n")
    L.append(_table(["split"] + cols + ["English", "Spanish"],
                    [[s] + [lt[s].get(c, 0) for c in cols]
                     + [lt[s].get("en/female", 0) + lt[s].get("en/male", 0), lt[s].get("es/female", 0) + lt[s].get("es/male", 0)]
                     for s in ("train", "test") if s in lt]))
    mt = ds["music"]["segments_by_split"]
    L.append("\n### music (cf. Table II)\n")
    L.append(_table(["split", "music", "voice (en)", "voice (es)"],
                    [[s, mt[s].get("music", 0), mt[s].get("voice/en", 0), mt[s].get("voice/es", 0)]
                     for s in ("train", "test") if s in mt]))
    st = ds["sae_train"]["segments_by_split"].get("train", {})
    total = max(1, sum(st.values()))
    L.append("\n### sae_train\n")
    L.append(_table(["class", "segments", "share"],
                    [[k, v, f"{100 * v / total:.1f} %"] for k, v in sorted(st.items())]))
    sae = ds["sae_train"]
    L.append(f"\nUnlabelled for SAE training; `lang`, `gender` and `kind` are kept for analysis and this card. "
             f"Female share of the speech segments: {100 * sae['female_share_of_speech']:.0f} %. Speech segments per "
             "synthesiser: " + ", ".join(f"{k} {v}" for k, v in sae["segments_by_engine"].items()) + ".\n")

    L.append("## Voices\n")
    L.append("A *speaker* is a timbre (an espeak-ng variant, or the person a flite/festival voice was recorded "
             "from); a *voice* is a speaker with fixed settings (accent, pitch, rate, vocal-tract factor); see "
             "`tools/demo_corpus/voices.py`.\n")
    inv = rec["voice_inventory"]
    keys = ["en/female", "en/male", "es/female", "es/male"]
    L.append(_table(["set"] + [f"{k} speakers / voices" for k in keys],
                    [[s] + [f"{inv[s].get(k, {}).get('speakers', 0)} / {inv[s].get(k, {}).get('voices', 0)}" for k in keys]
                     for s in inv]))
    L.append("\nGender labels: espeak-ng variants as their variant file declares (`gender` line) or, without "
             "one, by their male pitch range; flite/festival voices by the documented sex of the recorded "
             "speaker (CMU kal, awb, rms and ked male, slt female). Check, median F0 of the voices "
             "(YIN on the clean speech): "
             + "; ".join(f"{g}: {v['median_hz']} Hz over {v['voices']} voices (range {v['min_hz']}–{v['max_hz']})"
                         for g, v in rec["f0_check"].items()) + ".\n")
    acc = rec.get("accents") or {}
    if acc:
        L.append("espeak-ng accents (language voice: share of voices), as in a US call centre: "
                 + "; ".join(f"{lang}: " + ", ".join(f"`{a}` {w:.0%}" for a, w in acc[lang]) for lang in acc)
                 + ". Other English and Castilian accents are left out: mixed in, they blur the language "
                 "direction of the speaker encoder (see `ENGLISH_ACCENTS` in `tools/demo_corpus/accents.py`).\n")

    L.append("## Split policy\n")
    L.append(rec["split_policy"] + "\n")
    over = {k: v for k, v in rec["family_overlaps"].items() if v}
    L.append("Speaker families shared between sets: " + ("none." if not over else json.dumps(over)) + "\n")
    L.append("Music tracks per set: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in rec["sources"]["music"]["tracks"].items()) + ".\n")

    L.append("## How the audio was made\n")
    L.append(rec["audio"] + "\n")

    L.append("## Sources and licences\n")
    tx = rec["sources"]["text"]
    rows = []
    for lang in ("en", "es"):
        t = tx[lang]
        rows.append([f"text ({lang})", f"Debian `{t['package']}`", t["content"], f"{t['sentences_in_pool']} sentences", t["licence"]])
    m = rec["sources"]["music"]
    rows.append(["music", f"Debian `{m['package']}`", f"{m['title']}, by {m['author']}", f"{len(m['all_tracks'])} tracks",
                 m["licence"]])
    for name, s in rec["sources"]["synthesizers"].items():
        rows.append([f"synthesiser {name}", ", ".join(f"`{p}`" for p in s["packages"]), s["voices"], "", s["licence"]])
    L.append(_table(["what", "source", "content", "size", "licence"], rows))
    L.append("\nEnglish fortune files used: " + ", ".join(tx["en"]["files"]) + ". Spanish: " + tx["es"]["files"] + ".\n")
    L.append(f"The music pieces are adaptations of \"{m['title']}\" by {m['author']}, licensed under CC BY-SA 3.0; "
             f"changes: {m['changes']}. They may be shared under CC BY-SA 3.0 with this attribution. Text "
             "sentences are split and cleaned (attributions, quotes and list marks removed); speech made by the "
             "synthesisers is their output for that text.\n")
    L.append("Debian package versions: " + ", ".join(f"{k} {v}" for k, v in rec["debian_packages"].items()) + ".\n")

    L.append("## Limitations\n")
    L.append("- All speech is synthetic: timbre varies far less than across real callers; a speaker encoder may "
             "also pick up the synthesiser. English appears from three synthesisers, Spanish from espeak-ng "
             "only (Debian 12 main has no Spanish festival or flite voice).\n"
             "- Gender is the synthesiser's voice definition, not a listener's judgement.\n"
             "- Texts are quotations and proverbs, not conversation; sentences may recur across datasets (spoken by "
             "different voices), and within a class only after its shuffled pool is used up.\n"
             "- Expected segment counts assume `jsae embed`'s default segmenter settings (`joined` mode, 4–8 s, "
             "40 dB, −55 dBFS, 0.3 s gaps) with `--min-keep 4` (a recording under 4 s of speech gives no "
             "segment; without it, such a recording from 2 s on gives one short segment) at a 16 kHz encoder; "
             "`--segment-mode contiguous` gives other counts "
             "(each non-silent stretch cut on its own: utterances under 4 s dropped, long turns cut into more, "
             "shorter pieces).\n")
    if rec["shortfalls"]:
        L.append("- Classes short of their target (source exhausted): " + json.dumps(rec["shortfalls"]) + "\n")
    return "\n".join(L)


def write_data_card(path: str | Path, rec: dict) -> None:
    Path(path).write_text(render_data_card(rec), encoding="utf-8")
