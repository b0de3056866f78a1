"""Experiment loggers: W&B offline runs (config, metrics, resume, sweeps), TensorBoard, images.

Everything runs offline: the ``wandb_home`` fixture removes every ``WANDB_*`` variable and points
``HOME``, ``NETRC`` and the W&B config/cache/data folders into a temporary directory, so no real
credentials are found and ``mode=auto`` picks offline. Offline runs of wandb 0.31 keep their
data only in the ``run-<id>.wandb`` transaction log, which ``read_offline_run`` decodes.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image

from tests.helpers import QUIET, ROOT, TINY_VIT, run_cli, run_train
from vitrain import loggers as vl
from vitrain.errors import UserError

pytestmark = pytest.mark.xdist_group("loggers")  # one worker builds the module-scoped wandb_cli_run

FAST = [
    *TINY_VIT, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
    "data.image_size=16", "data.batch_size=32",
]  # fmt: skip


def isolate_wandb(mp: pytest.MonkeyPatch, home: Path) -> None:
    """No W&B credentials or settings from this machine: env cleared, HOME and W&B dirs in ``home``."""
    for name in list(os.environ):
        if name.startswith("WANDB_"):
            mp.delenv(name)
    home.mkdir(parents=True, exist_ok=True)
    mp.setenv("HOME", str(home))
    mp.setenv("NETRC", str(home / ".netrc"))
    mp.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    mp.setenv("WANDB_CACHE_DIR", str(home / ".cache" / "wandb"))
    mp.setenv("WANDB_DATA_DIR", str(home / ".local" / "wandb"))


@pytest.fixture
def wandb_home(tmp_path, monkeypatch) -> Path:
    """An isolated, credential-free W&B environment for this test (and its subprocesses)."""
    isolate_wandb(monkeypatch, tmp_path / "home")
    return tmp_path / "home"


def run_multirun(sweep_dir: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python train.py -m ...`` with its sweep directory at ``sweep_dir``."""
    args = [
        sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={sweep_dir}",
        f"paths.log_dir={sweep_dir.parent / 'logs'}", f"paths.data_dir={sweep_dir.parent / 'data'}",
        *QUIET, *overrides,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` transaction log (LevelDB log format, W&B header)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, pos, chunk, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            break
        chunk = payload if kind in (1, 2) else chunk + payload  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
    return records


def read_offline_run(run_dir: Path, timeout: float = 30.0) -> dict:
    """Id, group, config, logged history keys/values of an offline run directory.

    W&B's service writes the transaction log in the background: wait (up to ``timeout``) until
    the run record is there.
    """
    deadline = time.monotonic() + timeout
    run = _parse_offline_run(run_dir)
    while run["id"] is None and time.monotonic() < deadline:
        time.sleep(0.5)
        run = _parse_offline_run(run_dir)
    return run


def _parse_offline_run(run_dir: Path) -> dict:
    (log_file,) = run_dir.glob("run-*.wandb")
    run: dict = {"id": None, "group": None, "config": {}, "history": {}}
    for record in _wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        items = []
        if kind == "run":
            run["id"], run["group"] = record.run.run_id, record.run.run_group
            items = record.run.config.update
        elif kind == "config":
            items = record.config.update
        elif kind == "history":
            for item in record.history.item:  # media values come as nested keys
                name = item.key or item.nested_key[0]
                run["history"].setdefault(name, []).append(json.loads(item.value_json))
        for item in items:
            run["config"][item.key] = json.loads(item.value_json)
    return run


def offline_runs(save_dir: Path) -> list[Path]:
    """The offline W&B run directories under ``<save_dir>/wandb``, oldest first."""
    return sorted((save_dir / "wandb").glob("offline-run-*"))


@pytest.fixture(scope="module")
def wandb_cli_run(tmp_path_factory):
    """One ``logger=wandb`` training run, offline; shared by the tests that read it."""
    tmp = tmp_path_factory.mktemp("wandb_cli")
    with pytest.MonkeyPatch.context() as mp:
        isolate_wandb(mp, tmp / "home")
        run_dir = tmp / "run"
        proc = run_cli(run_dir, *FAST, "logger=wandb", "optimizer.lr=0.00123")
    return run_dir, proc


@pytest.mark.slow
def test_wandb_offline_run_logs_config_and_metrics(wandb_cli_run):
    run_dir, proc = wandb_cli_run
    assert proc.returncode == 0, proc.stderr
    run_id = (run_dir / vl.RUN_ID_FILE).read_text().strip()
    (offline,) = offline_runs(run_dir)
    assert offline.name.endswith(f"-{run_id}")
    assert f"wandb sync {run_dir}/wandb/offline-run-*-{run_id}" in proc.stderr
    run = read_offline_run(offline)
    assert run["id"] == run_id and run["group"] == ""
    # the run config is the fully resolved config
    assert run["config"]["model"]["net"]["name"] == "vit_tiny_patch16_224"
    assert run["config"]["optimizer"]["lr"] == 0.00123
    assert run["config"]["logger"]["wandb"]["mode"] == "auto"
    assert {"val/acc1", "val/loss", "trainer/global_step"} <= set(run["history"])
    assert 0.0 <= run["history"]["val/acc1"][-1] <= 1.0


@pytest.mark.slow
def test_wandb_restarted_run_keeps_its_id(wandb_cli_run, tmp_path, monkeypatch):
    run_dir, first = wandb_cli_run
    assert first.returncode == 0, first.stderr
    run_id = (run_dir / vl.RUN_ID_FILE).read_text().strip()
    isolate_wandb(monkeypatch, tmp_path / "home")
    # a completed run re-launched as it was does nothing; trained further it continues its W&B run
    proc = run_cli(run_dir, *FAST, "logger=wandb", "optimizer.lr=0.00123", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / vl.RUN_ID_FILE).read_text().strip() == run_id
    runs = offline_runs(run_dir)
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)
    assert read_offline_run(runs[-1])["id"] == run_id


@pytest.mark.slow
def test_wandb_multirun_jobs_are_separate_runs_in_one_group(tmp_path, wandb_home):
    sweep = tmp_path / "sweep_a1"
    proc = run_multirun(sweep, *FAST, "optimizer.lr=1e-3,3e-4", "logger=wandb")
    assert proc.returncode == 0, proc.stderr
    runs = []
    for job in ("0", "1"):
        (offline,) = offline_runs(sweep / job)
        runs.append(read_offline_run(offline))
        assert runs[-1]["id"] == (sweep / job / vl.RUN_ID_FILE).read_text().strip()
        assert "val/acc1" in runs[-1]["history"]
    assert runs[0]["id"] != runs[1]["id"]
    assert runs[0]["group"] == runs[1]["group"] == "sweep_a1"
    assert [r["config"]["optimizer"]["lr"] for r in runs] == [1e-3, 3e-4]


@pytest.mark.slow
def test_tensorboard_run_writes_events(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(run_dir, *FAST, "logger=tensorboard")
    assert proc.returncode == 0, proc.stderr
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in run_dir.rglob("*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert "val/acc1" in acc.Tags()["scalars"]
    assert not (run_dir / "wandb").exists()


def sample_images() -> list:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    grey = Image.fromarray(rng.integers(0, 256, size=(8, 8), dtype=np.uint8), "L")
    return [rgb, grey]


def test_log_images_to_tensorboard(tmp_path):
    tb = TensorBoardLogger(save_dir=tmp_path, name="tb", version="")
    vl.log_images([CSVLogger(tmp_path), tb, None], "recon", sample_images(), captions=["a", "b"], step=3)
    tb.experiment.flush()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"recon/0", "recon/1"}
    (event,) = acc.Images("recon/0")
    assert (event.step, event.height, event.width) == (3, 12, 10)
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        vl.log_images([tb], "recon", sample_images(), captions=["a"])


def test_log_images_to_offline_wandb_and_finish(tmp_path, wandb_home):
    logger = vl.create_wandb_logger(tmp_path / "run", project="vitrain-test", mode="offline")
    assert isinstance(logger, WandbLogger)
    assert not (tmp_path / "run" / "wandb").exists()  # no run before .experiment
    vl.log_images([logger, CSVLogger(tmp_path)], "recon", sample_images(), captions=["a", "b"], step=1)
    run_id = logger.experiment.id
    vl.finish_loggers([logger])
    assert logger._experiment is None
    vl.finish_loggers([logger])  # again: nothing to do
    (offline,) = offline_runs(tmp_path / "run")
    run = read_offline_run(offline)
    assert run["id"] == run_id and "recon" in run["history"]


def test_finish_loggers_accepts_anything(tmp_path, wandb_home):
    never_started = vl.create_wandb_logger(tmp_path / "run", project="p", mode="offline")
    vl.finish_loggers([CSVLogger(tmp_path), TensorBoardLogger(tmp_path), never_started, None])
    vl.finish_loggers([])
    vl.finish_loggers(None)
    vl.finish_loggers(never_started)
    assert never_started._experiment is None and not (tmp_path / "run" / "wandb").exists()


def test_mode_auto_online_with_api_key(wandb_home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert vl.wandb_credentials_found()
    assert vl.resolve_wandb_mode("auto") == "online"


def test_mode_auto_online_with_netrc_entry(wandb_home):
    netrc = wandb_home / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'y' * 40}\n")
    netrc.chmod(0o600)
    assert vl.resolve_wandb_mode("auto") == "online"


def test_mode_auto_offline_without_credentials(wandb_home, monkeypatch):
    assert not vl.wandb_credentials_found()
    assert vl.resolve_wandb_mode("auto") == "offline"
    assert vl.resolve_wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert vl.resolve_wandb_mode("auto") == "disabled"
    with pytest.raises(UserError, match="logger.wandb.mode"):
        vl.resolve_wandb_mode("sometimes")


def test_log_model_offline_is_downgraded(tmp_path, wandb_home, caplog):
    with caplog.at_level(logging.WARNING, logger="vitrain.loggers"):
        logger = vl.create_wandb_logger(tmp_path, project="p", log_model=True, mode="auto")
    assert logger._log_model is False
    assert "log_model=True needs an online run" in caplog.text


def test_run_id_file_and_sweep_group(tmp_path, wandb_home):
    config = tmp_path / "resolved_config.yaml"
    config.write_text("model:\n  net:\n    name: vit_x\noptimizer:\n  lr: 0.5\n")
    first = vl.create_wandb_logger(
        tmp_path, project="p", mode="offline", config_file=config, sweep_dir="/sweeps/2024-05-01_10-00-00",
        hydra_mode="MULTIRUN", tags=["a"],
    )  # fmt: skip
    again = vl.create_wandb_logger(tmp_path, project="p", mode="offline", hydra_mode="RUN", sweep_dir="/s/x")
    run_id = (tmp_path / vl.RUN_ID_FILE).read_text().strip()
    assert first.version == again.version == run_id and len(run_id) == 8
    init = first._wandb_init
    assert init["group"] == "2024-05-01_10-00-00" and again._wandb_init["group"] is None
    assert init["resume"] == "allow" and init["mode"] == "offline" and init["tags"] == ["a"]
    assert init["config"] == {"model": {"net": {"name": "vit_x"}}, "optimizer": {"lr": 0.5}}
    assert init["settings"].reinit == "create_new"
    assert "anonymous" not in init
