"""jsae export: the SAELens and sparsify layouts, loaded by those libraries themselves, give
jsae's codes and raw reconstruction (the normalisation folded into the weights).

The reference below is jsae's math written out in plain float64 numpy (independent of jsae):
x_n = (x − μ)/s, pre = (x_n − b_pre) W_enc + b_enc, v = ReLU(TopK_k(pre)) (or ReLU(pre)),
x̂ = s ⊙ (v W_dec + b_pre) + μ.

The library tests need the `export` extra (sae-lens, eai-sparsify, torch); without it they
skip with that reason. Everything else here needs only numpy.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from jsae.errors import BadValueError, JsaeError, NotFoundError
from jsae.export import MARKER, export_model, export_models, fold_normalizer, is_export_dir
from jsae.runs.modelfiles import read_models, write_model_files
from jsae.sweeps.export_cli import add_export_command
from jsae.core.normalize import Normalizer
from jsae.safety import UnsafeDeleteError

M, L, K, B = 16, 48, 5, 64
EXTRA = "needs the `export` extra: pip install -e '.[export]' (sae-lens, eai-sparsify, torch==2.13.0)"


def _lib(name):
    return pytest.importorskip(name, reason=f"{name} is not installed; {EXTRA}")


# ------------------------------------------------------------------ fixtures: a run with model files


def _params(rng, latent_size=L, dim=M):
    w_dec = rng.normal(size=(latent_size, dim))
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    return {"W_enc": (rng.normal(size=(dim, latent_size)) / np.sqrt(dim)).astype(np.float32),
            "b_enc": (0.3 * rng.normal(size=latent_size)).astype(np.float32),
            "W_dec": w_dec.astype(np.float32),
            "b_pre": (0.5 * rng.normal(size=dim)).astype(np.float32)}


def _normalizer(rng, kind):
    mu = 3.0 * rng.normal(size=M)
    if kind == "center_scale":  # one scale for every dimension, ≠ 1
        return Normalizer(kind, mu, np.full(M, 0.37))
    return Normalizer(kind, mu, rng.uniform(0.2, 2.5, M))  # standardize: per dimension


SPECS = [{"k": K, "latent_size": L, "activation": "topk", "l1_coef": 0.0, "name": f"k{K}_L{L}"},
         {"k": 0, "latent_size": L, "activation": "relu_l1", "l1_coef": 1e-3, "name": f"l1_0.001_L{L}"}]


@pytest.fixture(params=["center_scale", "standardize"])
def run(request, tmp_path):
    """(run_dir, {name: ModelFile}, raw x [B, M]) for a run with a TopK and a ReLU+L1 model."""
    rng = np.random.default_rng(7 if request.param == "center_scale" else 8)
    norm = _normalizer(rng, request.param)
    run_dir = tmp_path / "run"
    write_model_files(run_dir, [(s, _params(rng)) for s in SPECS], normalizer=norm, step=300, total_steps=300,
                      complete=True, run={"version": "0.1.0"})
    _, files = read_models(run_dir)
    x = norm.mean + norm.scale * rng.normal(size=(B, M)) * 1.3
    return run_dir, {f.name: f for f in files}, x


def reference(x, mf):
    """jsae's encode/decode in float64 numpy: (dense codes [B, L], raw reconstruction [B, M])."""
    p = {k: np.asarray(v, np.float64) for k, v in mf.params.items()}
    mu, s = np.asarray(mf.normalizer.mean, np.float64), np.asarray(mf.normalizer.scale, np.float64)
    xn = (np.asarray(x, np.float64) - mu) / s
    pre = (xn - p["b_pre"]) @ p["W_enc"] + p["b_enc"]
    if mf.spec["activation"] == "topk":
        k = int(mf.spec["k"])
        top = np.argsort(-pre, axis=1, kind="stable")[:, :k]
        v = np.zeros_like(pre)
        rows = np.arange(pre.shape[0])[:, None]
        v[rows, top] = np.maximum(pre[rows, top], 0.0)
        srt = -np.sort(-pre, axis=1)
        gap = (srt[:, k - 1] - srt[:, k]).min()
        assert gap > 1e-3, f"near-tie at the k-th pre-activation ({gap}); float32 could pick another latent"
        assert (v > 0).sum(axis=1).mean() > K / 2, "too few positive codes for a meaningful test"
    else:
        v = np.maximum(pre, 0.0)
    x_hat = s * (v @ p["W_dec"] + p["b_pre"]) + mu
    return v, x_hat


def _close(got, want, what):
    got = np.asarray(got, np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=what)


# ------------------------------------------------------------------ the folding (numpy only)


def test_folded_weights_reproduce_jsae(run):
    _, files, x = run
    for mf in files.values():
        w = {k: v.astype(np.float64) for k, v in fold_normalizer(mf).items()}
        assert all(v.dtype == np.float32 for v in fold_normalizer(mf).values())
        pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        v_ref, x_ref = reference(x, mf)
        if mf.activation == "topk":
            top = np.argsort(-pre, axis=1)[:, :K]
            v = np.zeros_like(pre)
            np.put_along_axis(v, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
        else:
            v = np.maximum(pre, 0)
        _close(v, v_ref, "codes")
        _close(v_ref @ w["W_dec"] + w["b_dec"], x_ref, "reconstruction")


# ------------------------------------------------------------------ SAELens itself


def test_saelens_topk(run, tmp_path):
    torch = _lib("torch")
    sae_lens = _lib("sae_lens")
    _, files, x = run
    mf = files[f"k{K}_L{L}"]
    out = export_model(mf, "saelens", tmp_path / "sl")
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "README.md", "cfg.json",
                                                            "sae_weights.safetensors"])
    sae = sae_lens.SAE.load_from_disk(out)
    assert isinstance(sae, sae_lens.TopKSAE)
    assert sae.cfg.k == K and sae.cfg.d_in == M and sae.cfg.d_sae == L
    assert sae.cfg.rescale_acts_by_decoder_norm is False and sae.cfg.apply_b_dec_to_input is True
    v_ref, x_ref = reference(x, mf)
    with torch.no_grad():
        xt = torch.as_tensor(x, dtype=torch.float32)
        codes = sae.encode(xt)
        recon = sae.decode(codes)
        fwd = sae(xt)
    assert tuple(codes.shape) == (B, L)
    _close(codes.numpy(), v_ref, "SAELens TopK codes")
    _close(recon.numpy(), x_ref, "SAELens TopK reconstruction")
    _close(fwd.numpy(), x_ref, "SAELens TopK forward")
    # the TopK class itself loads it too
    sae2 = sae_lens.TopKSAE.load_from_disk(out)
    with torch.no_grad():
        _close(sae2.encode(xt).numpy(), v_ref, "TopKSAE.load_from_disk codes")


def test_saelens_relu_l1_is_a_standard_sae(run, tmp_path):
    torch = _lib("torch")
    sae_lens = _lib("sae_lens")
    _, files, x = run
    mf = files[f"l1_0.001_L{L}"]
    sae = sae_lens.SAE.load_from_disk(export_model(mf, "saelens", tmp_path / "sl"))
    assert isinstance(sae, sae_lens.StandardSAE)
    v_ref, x_ref = reference(x, mf)
    with torch.no_grad():
        codes = sae.encode(torch.as_tensor(x, dtype=torch.float32))
        recon = sae.decode(codes)
    _close(codes.numpy(), v_ref, "SAELens ReLU codes")
    _close(recon.numpy(), x_ref, "SAELens ReLU reconstruction")


# ------------------------------------------------------------------ sparsify itself


def test_sparsify_topk(run, tmp_path):
    torch = _lib("torch")
    sparsify = _lib("sparsify")
    _, files, x = run
    mf = files[f"k{K}_L{L}"]
    out = export_model(mf, "sparsify", tmp_path / "sp")
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "README.md", "cfg.json", "sae.safetensors"])
    sae = sparsify.Sae.load_from_disk(out)
    assert sae.cfg.k == K and sae.d_in == M and sae.num_latents == L and sae.dtype == torch.float32
    v_ref, x_ref = reference(x, mf)
    with torch.no_grad():
        xt = torch.as_tensor(x, dtype=torch.float32)
        enc = sae.encode(xt)
        codes = torch.zeros(B, L).scatter_(1, enc.top_indices, enc.top_acts)
        recon = sae.decode(enc.top_acts, enc.top_indices)
        fwd = sae(xt)
    _close(codes.numpy(), v_ref, "sparsify codes")
    _close(recon.numpy(), x_ref, "sparsify reconstruction")
    _close(fwd.sae_out.numpy(), x_ref, "sparsify forward")


def test_sparsify_refuses_relu_l1(run, tmp_path):
    _, files, _ = run
    with pytest.raises(BadValueError, match="ReLU.L1.*--format saelens"):
        export_model(files[f"l1_0.001_L{L}"], "sparsify", tmp_path / "sp")
    assert not (tmp_path / "sp").exists()


# ------------------------------------------------------------------ the command


def _cli(argv):
    parser = argparse.ArgumentParser(prog="jsae")
    add_export_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_export_many_and_reexport(run, tmp_path, capsys):
    run_dir, files, x = run
    out = tmp_path / "exp"
    name = f"k{K}_L{L}"
    assert _cli(["export", str(run_dir), "--model", name, "--format", "sparsify", "--out", str(out)]) == 0
    assert is_export_dir(out) and (out / name / "sae.safetensors").is_file() and (out / "README.md").is_file()
    readme = (out / name / "README.md").read_text()
    assert str(run_dir.resolve()) in readme and "300" in readme and "μ + s ⊙ b_pre" in readme
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == "jsae-export" and marker["target"] == "sparsify" and marker["models"] == [name]
    # an earlier export is replaced (its model folders too)
    assert _cli(["export", str(run_dir), "--model", f"l1_0.001_L{L}", "--model", name, "--format", "saelens",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "README.md", name, f"l1_0.001_L{L}"])
    assert not (out / name / "sae.safetensors").exists() and (out / name / "sae_weights.safetensors").is_file()
    assert "exported 2 model(s)" in capsys.readouterr().out


def test_cli_sparsify_load_many(run, tmp_path):
    torch = _lib("torch")
    sparsify = _lib("sparsify")
    run_dir, files, x = run
    name = f"k{K}_L{L}"
    out = export_models(run_dir, [name], "sparsify", tmp_path / "exp")
    saes = sparsify.Sae.load_many(str(out), local=True)
    assert list(saes) == [name]
    with torch.no_grad():
        got = saes[name](torch.as_tensor(x, dtype=torch.float32)).sae_out.numpy()
    _close(got, reference(x, files[name])[1], "load_many reconstruction")


def test_cli_refuses_a_users_folder(run, tmp_path):
    run_dir, _, _ = run
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UnsafeDeleteError) as err:
        _cli(["export", str(run_dir), "--model", f"k{K}_L{L}", "--format", "saelens", "--out", str(out)])
    assert "\n" not in str(err.value) and "notes.txt" in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # a user file slipped into an earlier export makes it not ours any more
    exp = export_models(run_dir, [f"k{K}_L{L}"], "saelens", tmp_path / "exp")
    (exp / f"k{K}_L{L}" / "mine.txt").write_text("x")
    assert not is_export_dir(exp)
    with pytest.raises(UnsafeDeleteError):
        export_models(run_dir, [f"k{K}_L{L}"], "saelens", exp)
    assert (exp / f"k{K}_L{L}" / "mine.txt").read_text() == "x"


def test_cli_errors_before_writing(run, tmp_path):
    run_dir, _, _ = run
    out = tmp_path / "exp"
    with pytest.raises(NotFoundError, match=f"k{K}_L{L}"):
        _cli(["export", str(run_dir), "--model", "k99_L1", "--format", "saelens", "--out", str(out)])
    with pytest.raises(BadValueError):
        _cli(["export", str(run_dir), "--model", f"k{K}_L{L}", "--model", f"l1_0.001_L{L}", "--format",
              "sparsify", "--out", str(out)])
    with pytest.raises(JsaeError):
        export_models(tmp_path / "no_run", [f"k{K}_L{L}"], "saelens", out)
    assert not out.exists()
    with pytest.raises(SystemExit):  # argparse: an unknown format
        _cli(["export", str(run_dir), "--model", f"k{K}_L{L}", "--format", "onnx", "--out", str(out)])
