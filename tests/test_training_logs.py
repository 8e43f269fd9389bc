"""Training logs researchers watch live (``train.log``, :mod:`jsae.training.logs`).

* ``train.log`` is a list of backends (``tensorboard``, ``wandb``), checked like every config
  value, settable as an override, and changeable when a run is resumed;
* ``[tensorboard]``: one TensorBoard run per model, ``RUN/logs/<name>/`` with the names of
  ``RUN/models/``; its loss / NMSE / dead-fraction curves are ``sweep.json``'s history (steps
  and values), its learning rate the one Adam applied, and TensorBoard's HParams backend shows
  one row per model with its k and latent size and the final metrics;
* the event files hold each host call as soon as it ends (read by another reader mid-sweep);
* a resumed sweep appends, and what an earlier attempt logged after the checkpoint it resumed
  from is replaced, not duplicated;
* a sweep that fails before its first checkpoint leaves no ``RUN/logs`` (it starts afresh);
* ``[wandb]`` with ``WANDB_MODE=offline``: one W&B run (named after the run folder, the run's
  id, the sweep config) whose history has ``<model>/loss`` etc. at the training steps; it is
  finished with exit code 1 when the sweep stops on an error;
* a backend whose package is missing is one line naming the extra, before any data is read.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import jsae.training.loop as loop
from jsae.config import ConfigError, OptimConfig, load_config
from jsae.runs.layout import LOGS_DIR
from jsae.synthetic import make_dictionary_data
from jsae.sweeps.cli import main
from jsae.training.failures import TrainingDivergedError
from jsae.training.logs import LogBackendError, TrainingLogs, learning_rate
from jsae.training.resume import check_resumable

ROOT = Path(__file__).resolve().parents[1]
X = make_dictionary_data(1500, dim=16, n_atoms=32, active=2, seed=3).x
NAMES = ["k2_L16", "k4_L16", "k2_L32", "k4_L32"]
BASE = ["grid.k=[2,4]", "grid.latent_size=[16,32]", "train.steps=60", "train.batch_size=128",
        "train.steps_per_call=10", "train.checkpoint_every=30", "train.progress=false"]


def _extra(name: str, *modules: str):
    """A test needing the ``name`` extra (installed by ``make setup``; ``pytest -m 'not embed'`` leaves it out)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]

    def mark(test):
        return pytest.mark.embed(pytest.mark.skipif(bool(missing), reason=f"the {name} extra: {missing}")(test))
    return mark


needs_tensorboard = _extra("tensorboard", "tensorboardX", "tensorboard")
needs_wandb = _extra("wandb", "wandb")


def _sweep(run: Path, *overrides: str, stop_after: int | None = None):
    return loop.train_sweep(load_config(None, [*BASE, *overrides]), run, data=X, stop_after=stop_after)


def _history(run: Path) -> tuple[list[str], dict]:
    info = json.loads((run / "sweep.json").read_text())
    return [m["name"] for m in info["models"]], info["history"]


def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def _assert_curves_are_the_history(run: Path) -> None:
    names, history = _history(run)
    for i, name in enumerate(names):
        for key in ("loss", "nmse", "dead_fraction"):
            logged = _scalars(run / LOGS_DIR / name, key)
            assert [s for s, _ in logged] == history["step"], (name, key)
            np.testing.assert_allclose([v for _, v in logged], [row[i] for row in history[key]], rtol=1e-6,
                                       atol=1e-12, err_msg=f"{name} {key}")


def _session_groups(logdir: Path) -> dict[str, tuple[dict, dict]]:
    """What TensorBoard's HParams tab lists: ``{session group: (hparams, {metric: (value, step)})}``."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    ctx = backend_context.Context(base_plugin.TBContext(data_provider=provider, logdir=str(logdir), multiplexer=mux))
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=1000, allowed_statuses=[
        api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    groups = list_session_groups.Handler(context.RequestContext(), ctx, "", request).run().session_groups

    def value(v):
        return v.string_value if v.WhichOneof("kind") == "string_value" else v.number_value
    return {g.name: ({k: value(v) for k, v in g.hparams.items()},
                     {m.name.tag: (m.value, m.training_step) for m in g.metric_values}) for g in groups}


def _wandb_records(wandb_dir: Path) -> list:
    """The records of the one offline W&B run under ``wandb_dir`` (its ``run-<id>.wandb`` file: W&B's
    record log, a 7-byte header then 32 KiB blocks of chunks with a 7-byte header each,
    crc32c / length / type FULL=1 FIRST=2 MIDDLE=3 LAST=4, holding ``Record`` protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = list(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    data = files[0].read_bytes()
    assert data[:4] == b":W&B"
    block, pos, chunk, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def _of(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def _wandb_history(records: list) -> dict[int, dict]:
    return {h.step.num: {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in h.item}
            for h in _of(records, "history")}


# ------------------------------------------------------------------------------------ the config

def test_train_log_is_a_checked_list_of_backends():
    assert load_config(None).train.log == ()
    assert load_config(ROOT / "configs" / "default.yaml", ["train.log=[tensorboard]"]).train.log == ("tensorboard",)
    assert load_config(None, ["train.log=[wandb,tensorboard]"]).train.log == ("wandb", "tensorboard")
    with pytest.raises(ConfigError, match=r"train.log has 'tensorbord', which is not one of \['tensorboard', "
                                          r"'wandb'\]; write e.g. train.log=\[tensorboard\]"):
        load_config(None, ["train.log=[tensorbord]"])
    with pytest.raises(ConfigError, match=r"train.log=\['wandb', 'wandb'\] names a backend twice"):
        load_config(None, ["train.log=[wandb,wandb]"])
    with pytest.raises(ConfigError, match=r"train.log.*could not be converted to a list"):
        load_config(None, ["train.log=tensorboard"])


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_bundled_config_states_train_log(name):
    assert "\n  log: []" in (ROOT / "configs" / name).read_text()
    assert load_config(ROOT / "configs" / name).train.log == ()


def test_logged_learning_rate_is_the_one_adam_applies():
    """With a constant gradient, Adam's bias-corrected update is ``-lr_t · g / (|g| + ε)``: the
    learning rate of each update, read off the optimiser the grid trains with."""
    import jax.numpy as jnp

    from jsae.training.grid import make_optimizer

    for optim in (OptimConfig(lr=1e-3, warmup_steps=4, eps=1e-12), OptimConfig(lr=2e-4, eps=1e-12)):
        tx = make_optimizer(optim)
        params = jnp.zeros(3)
        state = tx.init(params)
        for step in range(1, 9):
            update, state = tx.update(jnp.ones(3), state, params)
            assert learning_rate(optim, step) == pytest.approx(-float(update[0]), rel=1e-4, abs=1e-12), step
    assert learning_rate(OptimConfig(lr=1e-3, warmup_steps=4), 3) == pytest.approx(0.5e-3)


# ------------------------------------------------------------------------------------ TensorBoard

@needs_tensorboard
def test_tensorboard_one_run_per_model_equal_to_the_history_with_hparams(tmp_path):
    run = tmp_path / "run"
    _sweep(run, "train.log=[tensorboard]", "optim.warmup_steps=25")
    names, history = _history(run)
    assert sorted(names) == sorted(NAMES)
    assert sorted(p.name for p in (run / LOGS_DIR).iterdir()) == sorted(p.name for p in (run / "models").iterdir()
                                                                        if p.is_dir())
    _assert_curves_are_the_history(run)
    for name in names:
        folder = run / LOGS_DIR / name
        lr = _scalars(folder, "lr")
        assert [s for s, _ in lr] == history["step"]
        np.testing.assert_allclose([v for _, v in lr], [5e-4 * min(s - 1, 25) / 25 for s in history["step"]],
                                   rtol=1e-6)
        k = int(name.split("_")[0][1:])
        assert all(0 < v <= k + 1e-6 for _, v in _scalars(folder, "l0"))
        assert all(v >= 0 for _, v in _scalars(folder, "auxk"))
        assert all(v > 0 for _, v in _scalars(folder, "steps_per_s"))

    groups = _session_groups(run / LOGS_DIR)  # the HParams tab: one row per model, its final metrics
    assert sorted(groups) == sorted(names)
    for i, name in enumerate(names):
        hparams, metrics = groups[name]
        assert hparams == {"k": float(name.split("_")[0][1:]), "latent_size": float(name.split("_L")[1]),
                           "activation": "topk"}
        value, step = metrics["loss"]
        assert step == 60 and value == pytest.approx(history["loss"][-1][i], rel=1e-6)


@needs_tensorboard
def test_tensorboard_relu_l1_grid_names_its_l1_coefficients(tmp_path):
    run = tmp_path / "run"
    loop.train_sweep(load_config(None, ["grid.activation=relu_l1", "grid.l1_coef=[0.001,0.01]", "grid.latent_size=[16]",
                                        "train.steps=20", "train.batch_size=128", "train.steps_per_call=10",
                                        "train.progress=false", "train.log=[tensorboard]"]), run, data=X)
    groups = _session_groups(run / LOGS_DIR)
    assert {name: hp for name, (hp, _) in groups.items()} == {
        "l1_0.001_L16": {"l1_coef": 0.001, "latent_size": 16.0, "activation": "relu_l1"},
        "l1_0.01_L16": {"l1_coef": 0.01, "latent_size": 16.0, "activation": "relu_l1"}}


@needs_tensorboard
def test_tensorboard_events_are_on_disk_when_each_host_call_ends(tmp_path, monkeypatch):
    run, seen = tmp_path / "run", []
    plain = TrainingLogs.hook

    def hook_then_read(self, call):  # another reader, opening the files as TensorBoard does
        plain(self, call)
        seen.append((call.step, {name: [s for s, _ in _scalars(run / LOGS_DIR / name, "loss")] for name in NAMES}))

    monkeypatch.setattr(TrainingLogs, "hook", hook_then_read)
    _sweep(run, "train.log=[tensorboard]")
    assert [step for step, _ in seen] == [10, 20, 30, 40, 50, 60]
    for step, on_disk in seen:
        assert on_disk == {name: list(range(10, step + 1, 10)) for name in NAMES}, step


@needs_tensorboard
def test_tensorboard_resumed_sweep_appends_without_duplicate_steps(tmp_path):
    run = tmp_path / "run"
    _sweep(run, "train.log=[tensorboard]", "train.checkpoint_every=20", stop_after=40)
    # as if the sweep had been killed after logging steps 30 and 40 but before saving step 40
    shutil.rmtree(run / "checkpoints" / "40")
    assert [s for s, _ in _scalars(run / LOGS_DIR / "k2_L16", "loss")] == [10, 20, 30, 40]
    _sweep(run, "train.log=[tensorboard]", "train.checkpoint_every=20")  # resumes from step 20
    for name in NAMES:
        assert len(list((run / LOGS_DIR / name).glob("events.out.tfevents.*"))) == 2
    _assert_curves_are_the_history(run)  # steps 10 … 60 once each, the resumed sweep's values after 20
    _, history = _history(run)
    assert history["step"] == [10, 20, 30, 40, 50, 60]
    check_resumable(run, load_config(None, [*BASE, "train.checkpoint_every=20", "train.log=[]"]))  # logs may change


@needs_tensorboard
def test_sweep_failing_before_its_first_checkpoint_leaves_no_logs(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="is not finite"):
        _sweep(run, "train.log=[tensorboard]", "optim.lr=1e30", "train.checkpoint_every=50")
    assert not run.exists()  # made by the sweep, removed with everything in it: the same --out starts afresh


# ------------------------------------------------------------------------------------ W&B

@needs_wandb
def test_wandb_offline_run_has_every_models_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    (tmp_path / "wandb-dir").mkdir()
    run = tmp_path / "my-sweep"
    _sweep(run, "train.log=[wandb]")
    names, history = _history(run)
    records = _wandb_records(tmp_path / "wandb-dir")
    [header] = _of(records, "run")
    assert header.display_name == "my-sweep"
    assert header.run_id == json.loads((run / "sweep.json").read_text())["run_id"]
    config = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in header.config.update}
    assert config["grid"]["k"] == [2, 4] and config["train"]["log"] == ["wandb"]
    logged = _wandb_history(records)
    assert sorted(logged) == history["step"]
    for j, step in enumerate(history["step"]):
        for i, name in enumerate(names):
            for key in ("loss", "nmse", "dead_fraction"):
                assert logged[step][f"{name}/{key}"] == pytest.approx(history[key][j][i], rel=1e-6)
            assert {f"{name}/auxk", f"{name}/l0"} <= logged[step].keys()
        assert logged[step]["lr"] == pytest.approx(5e-4)
    assert [e.exit_code for e in _of(records, "exit")] == [0]
    assert not (run / LOGS_DIR).exists()  # WANDB_DIR set: W&B's files are there


@needs_wandb
@needs_tensorboard
def test_wandb_run_is_finished_failed_when_the_sweep_stops_on_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)  # W&B's files then go to RUN/logs/wandb/
    plain = loop.stop_if_diverged

    def failing_at_40(run_dir, grid):  # a hook that fails after the first checkpoint (step 30)
        check = plain(run_dir, grid)

        def hook(call):
            check(call)
            if call.step >= 40:
                raise RuntimeError("a failure at step 40")
        return hook

    monkeypatch.setattr(loop, "stop_if_diverged", failing_at_40)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="a failure at step 40"):
        _sweep(run, "train.log=[tensorboard,wandb]")
    records = _wandb_records(run / LOGS_DIR)
    assert sorted(_wandb_history(records)) == [10, 20, 30, 40]
    assert [e.exit_code for e in _of(records, "exit")] == [1]
    assert [s for s, _ in _scalars(run / LOGS_DIR / "k2_L16", "loss")] == [10, 20, 30, 40]


# ------------------------------------------------------------------------------------ several processes

def test_only_the_primary_process_writes_logs(tmp_path):
    """Another process of a distributed sweep (``primary=False``) opens no backend and writes nothing."""
    from types import SimpleNamespace

    from jsae.core.activation import TopK
    from jsae.core.spec import ModelSpec

    grid = SimpleNamespace(specs=(ModelSpec(16, TopK(2)),))
    logs = TrainingLogs(load_config(None, ["train.log=[tensorboard,wandb]"]), tmp_path, grid, run_id=None, start=0,
                        primary=False)
    logs.hook(None)
    logs.close()
    assert logs.backends == () and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ missing packages

@pytest.mark.parametrize("backend,module", [("tensorboard", "tensorboardX"), ("wandb", "wandb")])
def test_missing_backend_package_is_one_line_before_any_data_is_read(tmp_path, monkeypatch, capsys, backend, module):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))

    def no_reading(*_a, **_k):
        raise AssertionError("the store was opened for training")

    store = tmp_path / "store"
    assert main(["store", "synth", "--out", str(store), "--rows", "400", "--dim", "8"]) == 0
    monkeypatch.setattr(loop, "open_training_store", no_reading)
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["sweep", "default", "--out", str(run), f"data.store={store}", f"train.log=[{backend}]",
                 "train.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"train.log has '{backend}' but the package {module} is not installed; pip install 'jsae[{backend}]'" in err
    assert not run.exists()
    with pytest.raises(LogBackendError, match=rf"pip install 'jsae\[{backend}\]'"):
        loop.train_sweep(load_config(None, [*BASE, f"train.log=[{backend}]"]), tmp_path / "api", data=X)
