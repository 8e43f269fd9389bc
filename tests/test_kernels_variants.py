"""The kernel libraries are built for portable targets, and the loader picks the one this CPU runs.

* The recipe (jsae/kernels/build.py) never passes ``-march=native`` unless asked, and the
  installed libraries say so themselves: GCC records the options it compiled them with in
  the ``.GCC.command.line`` section (``-frecord-gcc-switches``), read here with ``readelf``.
* :func:`choose_variant` picks x86-64-v3 only when /proc/cpuinfo lists every v3 feature
  (fake cpuinfo texts of real CPUs, and each feature removed in turn); on this machine it
  agrees with GCC's own ``__builtin_cpu_supports("x86-64-v3")``.
* The loader registers that variant, falls back to the baseline with one warning when the
  v3 library is missing, and silently on a CPU without the v3 features.
* tests/test_kernels.py (kernels vs XLA) passes on the baseline too (it runs on the
  variant the loader picks; here it runs again with ``JSAE_KERNELS_VARIANT=baseline``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jsae.kernels import build
from jsae.kernels.build import X86_64_V2, X86_64_V3, build_plan, choose_variant, cpu_flags, library_path, variants

REPO = Path(__file__).resolve().parents[1]
X86 = build.machine() == "x86_64"

# The x86-64 psABI's levels, in its own words (feature → the name Linux's /proc/cpuinfo gives it).
PSABI_V2 = {"CMPXCHG16B": "cx16", "LAHF-SAHF": "lahf_lm", "POPCNT": "popcnt", "SSE3": "pni", "SSE4_1": "sse4_1",
            "SSE4_2": "sse4_2", "SSSE3": "ssse3"}
PSABI_V3 = {"AVX": "avx", "AVX2": "avx2", "BMI1": "bmi1", "BMI2": "bmi2", "F16C": "f16c", "FMA": "fma",
            "LZCNT": "abm", "MOVBE": "movbe", "OSXSAVE": "xsave"}

# flags lines of real CPUs (from their /proc/cpuinfo)
HASWELL = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse "
           "sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon pebs bts rep_good nopl "
           "xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx est tm2 ssse3 sdbg fma "
           "cx16 xtpr pdcm pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand "
           "lahf_lm abm cpuid_fault epb invpcid_single pti ssbd ibrs ibpb stibp tpr_shadow vnmi flexpriority ept "
           "vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid xsaveopt dtherm ida arat pln pts")
SANDY_BRIDGE = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr "
                "sse sse2 ss ht tm pbe syscall nx rdtscp lm constant_tsc arch_perfmon pebs bts rep_good nopl "
                "xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx est tm2 ssse3 cx16 "
                "xtpr pdcm pcid sse4_1 sse4_2 x2apic popcnt tsc_deadline_timer aes xsave avx lahf_lm epb pti ssbd "
                "ibrs ibpb stibp tpr_shadow vnmi flexpriority ept vpid xsaveopt dtherm ida arat pln pts")
GRAVITON2 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"


def _cpuinfo(*flag_lines: str, key: str = "flags") -> str:
    return "".join(f"processor\t: {i}\nvendor_id\t: GenuineIntel\n{key}\t\t: {line}\n\n"
                   for i, line in enumerate(flag_lines))


# ----------------------------------------------------------------------------- the recipe


def test_the_levels_are_the_psabi_levels():
    assert X86_64_V2 == set(PSABI_V2.values())
    assert X86_64_V3 == set(PSABI_V2.values()) | set(PSABI_V3.values())


def test_by_default_the_recipe_builds_the_portable_levels_and_never_native(monkeypatch):
    monkeypatch.delenv(build.ENV_MARCH, raising=False)
    monkeypatch.delenv("JSAE_KERNEL_MARCH", raising=False)
    plan = build_plan(arch="x86_64")
    assert {s: v.march for s, v in plan.items()} == {"": "x86-64-v2", "_v3": "x86-64-v3"}
    for variant in plan.values():
        cmd = build.compile_command("out.so", variant.march)
        assert f"-march={variant.march}" in cmd and not any("native" in c for c in cmd), cmd
    # elsewhere: the compiler's default target, no -march flag
    (other,) = build_plan(arch="aarch64").values()
    assert other.march is None and not any(c.startswith("-march") for c in build.compile_command("o.so", None))


def test_native_is_built_only_on_request_and_empties_the_other_slot(monkeypatch):
    monkeypatch.setenv(build.ENV_MARCH, "native")
    assert {s: v and v.march for s, v in build_plan(arch="x86_64").items()} == {"": "native", "_v3": None}
    monkeypatch.delenv(build.ENV_MARCH)
    assert {s: v and v.march for s, v in build_plan("native", arch="x86_64").items()} == {"": "native", "_v3": None}


def _recorded_switches(path: Path) -> str:
    out = subprocess.run(["readelf", "-p", ".GCC.command.line", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(not X86, reason="the x86-64 levels apply to x86-64 only")
@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils, installed with g++) is needed")
def test_the_installed_libraries_were_compiled_for_the_portable_levels():
    for variant in variants():
        path = library_path(suffix=variant.suffix)
        assert path.is_file() and path.stat().st_size > 0, f"{path.name} is not built"
        switches = _recorded_switches(path)
        marches = [w for w in switches.split() if w.startswith("-march=")]
        # -march=native would be recorded as the building CPU's name (-march=znver3, …)
        assert marches == [f"-march={variant.march}"], (path.name, marches)


# ----------------------------------------------------------------------------- choosing


def test_a_cpu_with_every_v3_feature_gets_v3():
    assert choose_variant(cpu_flags(_cpuinfo(HASWELL, HASWELL)), "x86_64").name == "v3"


def test_a_cpu_with_avx_but_not_avx2_gets_the_baseline():
    assert choose_variant(cpu_flags(_cpuinfo(SANDY_BRIDGE)), "x86_64").name == "v2"


@pytest.mark.parametrize("feature", sorted(PSABI_V3))
def test_any_missing_v3_feature_means_the_baseline(feature):
    flags = " ".join(f for f in HASWELL.split() if f != PSABI_V3[feature])
    assert choose_variant(cpu_flags(_cpuinfo(flags)), "x86_64").name == "v2"


def test_every_processor_must_have_the_features():
    without_avx2 = HASWELL.replace(" avx2", "")
    assert choose_variant(cpu_flags(_cpuinfo(HASWELL, without_avx2)), "x86_64").name == "v2"


def test_no_cpuinfo_and_other_architectures_get_the_baseline():
    assert choose_variant(cpu_flags(""), "x86_64").name == "v2"
    assert choose_variant(cpu_flags(_cpuinfo(GRAVITON2, key="Features")), "aarch64").name == "default"


@pytest.mark.skipif(not X86, reason="the x86-64 levels apply to x86-64 only")
def test_on_this_machine_the_choice_agrees_with_gcc(tmp_path):
    """GCC ≥ 12 answers ``__builtin_cpu_supports("x86-64-v3")`` from CPUID itself."""
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("gcc is needed for the reference")
    src = tmp_path / "level.c"
    src.write_text('#include <stdio.h>\nint main(void) { __builtin_cpu_init(); '
                   'printf("%d\\n", __builtin_cpu_supports("x86-64-v3") != 0); return 0; }\n')
    built = subprocess.run([cc, str(src), "-o", str(tmp_path / "level")], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"this gcc has no x86-64 level names (GCC ≥ 12): {built.stderr.strip()[:200]}")
    v3 = subprocess.run([str(tmp_path / "level")], capture_output=True, text=True, check=True).stdout.strip() == "1"
    from jsae.kernels.load import this_cpu_flags

    assert choose_variant(this_cpu_flags()).name == ("v3" if v3 else "v2")


# ----------------------------------------------------------------------------- loading

# Runs in a fresh process (XLA keeps FFI registrations for the life of a process): loads the
# kernels with the libraries in FOLDER and the CPU flags FLAGS (None: this CPU's), runs one
# kernel, and reports what was loaded and which warnings were raised.
LOADER = textwrap.dedent("""
    import json, sys, warnings
    from pathlib import Path
    import jax.numpy as jnp
    import jsae.kernels.load as load
    from jsae.kernels import build, top_k
    folder, flags = Path(sys.argv[1]), json.loads(sys.argv[2])
    load.library_path = lambda directory=None, suffix="": build.library_path(directory or folder, suffix)
    if flags is not None:
        load.this_cpu_flags = lambda: frozenset(flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = load.available() and load.available()
        values, _ = top_k(jnp.asarray([[3.0, 1.0, 2.0]]), 2)
    lib = load.loaded_variant()
    print(json.dumps({"ok": ok, "values": values.tolist(), "library": lib.path.name, "march": lib.march,
                      "note": lib.note, "warnings": [str(w.message) for w in caught]}))
""")


def _load_in(folder: Path, flags=None, env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", LOADER, str(folder), json.dumps(flags and sorted(flags))],
                         capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built_pair(tmp_path_factory) -> Path:
    """A copy of the installed libraries (baseline and v3)."""
    if not X86:
        pytest.skip("two variants exist on x86-64 only")
    folder = tmp_path_factory.mktemp("kernels")
    for variant in variants():
        shutil.copy2(library_path(suffix=variant.suffix), library_path(folder, variant.suffix))
    return folder


def test_a_v3_cpu_loads_the_v3_library(built_pair):
    got = _load_in(built_pair, X86_64_V3 | {"sse", "sse2"})
    assert got["ok"] and got["values"] == [[3.0, 2.0]]
    assert (got["library"], got["march"], got["note"], got["warnings"]) == (
        library_path(suffix="_v3").name, "x86-64-v3", None, [])


def test_an_older_cpu_loads_the_baseline_without_a_warning(built_pair):
    got = _load_in(built_pair, X86_64_V2 | {"avx"})
    assert got["ok"] and got["values"] == [[3.0, 2.0]]
    assert (got["library"], got["march"], got["note"], got["warnings"]) == (
        library_path().name, "x86-64-v2", None, [])


def test_a_missing_v3_library_falls_back_to_the_baseline_with_one_warning(built_pair, tmp_path):
    shutil.copy2(library_path(built_pair), library_path(tmp_path))
    library_path(tmp_path, "_v3").write_bytes(b"")  # the placeholder of a failed compile
    got = _load_in(tmp_path, X86_64_V3)
    assert got["ok"] and got["values"] == [[3.0, 2.0]] and got["march"] == "x86-64-v2"
    assert len(got["warnings"]) == 1 and "_v3" in got["warnings"][0] and "baseline" in got["warnings"][0]
    assert got["note"] and "not built" in got["note"]


def test_a_library_built_for_a_requested_target_is_used_as_it_is(built_pair, tmp_path):
    # stands in for a JSAE_KERNELS_MARCH build: the v3 library in the baseline slot, no other
    shutil.copy2(library_path(built_pair, "_v3"), library_path(tmp_path))
    got = _load_in(tmp_path, X86_64_V3)
    assert (got["ok"], got["library"], got["march"], got["warnings"]) == (True, library_path().name, "x86-64-v3", [])


def test_the_kernel_comparisons_pass_on_the_baseline_too():
    """tests/test_kernels.py, with the baseline library (it checks which variant it ran on)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kernels.py"],
                         capture_output=True, text=True, cwd=REPO, timeout=900,
                         env={**os.environ, "JSAE_KERNELS_VARIANT": "baseline"})
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout
