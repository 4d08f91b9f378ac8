"""The launcher presets, the frozen-code snapshot, and sweeps on a real local Slurm cluster.

Tests marked ``slurm`` need ``make slurm-up`` and are skipped, with the reason, without it. The
sweep tests run a small Hydra app (written here into a temporary folder) from a copy of the code
that the first job edits, so each test can see whether later jobs ran the edited or frozen code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest_slurm import (
    cancel_jobs,
    copy_code_tree,
    job_state,
    release_requeue_hold,
    require_slurm,
    slurm_launcher_overrides,
    submitit_job_ids,
    wait_until,
)
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.utils import get_class
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf

from dcutmix.config import CONF_DIR
from dcutmix.errors import ConfigError
from dcutmix.sweep.launcher import (
    FrozenLocalLauncher,
    QueueWatcher,
    rebase_config_loader,
    sacct_unavailable,
    snapshot_code,
)
from hydra_plugins.dcutmix_launcher import DcutmixSlurmConf

PROBE_APP = textwrap.dedent(
    """
    import json, os, time
    from pathlib import Path

    import hydra
    from hydra.core.hydra_config import HydraConfig

    import dcutmix

    ROOT = Path(dcutmix.__file__).resolve().parent.parent


    @hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="probe")
    def probe(cfg):
        out = Path(HydraConfig.get().runtime.output_dir)
        first_attempt = os.environ.get("SLURM_RESTART_COUNT", "0") == "0"
        seen = {"idx": cfg.idx, "dcutmix": dcutmix.__file__, "value": cfg.frozen_value,
                "marker": getattr(dcutmix, "PROBE_MARKER", None),
                "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
                "threads": os.environ.get("OMP_NUM_THREADS")}
        with open(out / "seen.jsonl", "a") as f:
            f.write(json.dumps(seen) + "\\n")
        if cfg.idx == 0 and first_attempt:
            live = Path(os.environ["PROBE_LIVE_ROOT"])
            conf = live / "conf" / "probe.yaml"
            conf.write_text(conf.read_text().replace("original", "edited"))
            with open(live / "dcutmix" / "__init__.py", "a") as f:
                f.write('\\nPROBE_MARKER = "edited"\\n')
            time.sleep(cfg.sleep)


    if __name__ == "__main__":
        probe()
    """
)

PROBE_CONFIG = textwrap.dedent(
    """
    idx: 0
    frozen_value: original
    sleep: 0
    hydra:
      sweep:
        dir: ${oc.env:PROBE_SWEEP_DIR}
        subdir: job${hydra.job.num}
    """
)


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    """The project's configs without conf/local/, so a developer's cluster settings stay out."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf, ignore=shutil.ignore_patterns("local"))
    return conf


def compose_launcher(conf_dir: Path, launcher: str, overrides: tuple[str, ...] = ()):
    """The composed ``hydra.launcher`` node of the training config with a launcher preset."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[f"hydra/launcher={launcher}", *overrides],
                return_hydra_config=True,
            )
            return cfg.hydra.launcher
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("preset", "schema", "base"),
    [
        ("slurm", DcutmixSlurmConf, SlurmLauncher),
        ("slurm_ddp", DcutmixSlurmConf, SlurmLauncher),
        ("local", LocalQueueConf, LocalLauncher),
    ],
)
def test_launcher_presets_compose_with_only_keys_the_plugin_accepts(conf_dir, preset, schema, base):
    launcher = compose_launcher(conf_dir, preset)
    accepted = {f.name for f in dataclasses.fields(schema)}
    assert set(launcher.keys()) <= accepted
    target = get_class(launcher._target_)
    assert launcher._target_.startswith("hydra_plugins.")
    assert issubclass(target, base)
    assert OmegaConf.to_container(launcher)["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"
    OmegaConf.to_container(launcher, resolve=True)


def test_slurm_presets_ask_for_gpus_and_requeue_on_timeout(conf_dir):
    single = compose_launcher(conf_dir, "slurm")
    assert (single.gpus_per_node, single.tasks_per_node, single.nodes) == (1, 1, 1)
    assert single.max_num_timeout >= 3
    assert single.partition is None and single.account is None and single.qos is None
    ddp = compose_launcher(conf_dir, "slurm_ddp", ("hydra.launcher.gpus_per_node=8",))
    assert ddp.gpus_per_node == ddp.tasks_per_node == 8
    assert ddp.max_num_timeout == single.max_num_timeout


@pytest.mark.parametrize("preset", ["slurm", "slurm_ddp"])
def test_local_slurm_yaml_is_optional_and_the_command_line_wins(conf_dir, preset):
    assert compose_launcher(conf_dir, preset).partition is None
    (conf_dir / "local").mkdir()
    (conf_dir / "local" / "slurm.yaml").write_text(
        "partition: gpu\naccount: my_lab\nsetup: [ml cuda]\n"
    )
    launcher = compose_launcher(conf_dir, preset)
    assert (launcher.partition, launcher.account, list(launcher.setup)) == (
        "gpu",
        "my_lab",
        ["ml cuda"],
    )
    on_the_command_line = ("hydra.launcher.partition=debug",)
    assert compose_launcher(conf_dir, preset, on_the_command_line).partition == "debug"


def test_snapshot_holds_the_code_and_configs_and_ignores_later_edits(tmp_path):
    live = copy_code_tree(tmp_path / "live")
    (live / "dcutmix" / "__pycache__").mkdir(exist_ok=True)
    (live / "dcutmix" / "__pycache__" / "stale.pyc").write_bytes(b"x")
    sweep_dir = tmp_path / "sweep"

    snapshot = snapshot_code(sweep_dir, source_root=live)

    assert snapshot == sweep_dir / ".code"
    for name in (
        "dcutmix/__init__.py",
        "dcutmix/sweep/launcher.py",
        "hydra_plugins",
        "conf/train.yaml",
    ):
        assert (snapshot / name).exists(), name
    assert not (snapshot / "dcutmix" / "__pycache__").exists()
    record = json.loads((snapshot / "snapshot.json").read_text())
    assert record["source"] == str(live) and record["git_revision"] is None  # live is no checkout
    # conf/sweep is a symlink to ../sweeps in the checkout; the snapshot holds real files.
    assert (live / "conf" / "sweep").is_symlink()
    assert not (snapshot / "conf" / "sweep").is_symlink()
    assert sorted(p.name for p in (snapshot / "conf" / "sweep").iterdir()) == sorted(
        p.name for p in (live / "sweeps").iterdir()
    )
    frozen_init = (snapshot / "dcutmix" / "__init__.py").read_text()
    frozen_train = (snapshot / "conf" / "train.yaml").read_text()

    (live / "dcutmix" / "__init__.py").write_text("raise RuntimeError('edited')\n")
    (live / "conf" / "train.yaml").write_text("edited: true\n")

    assert (snapshot / "dcutmix" / "__init__.py").read_text() == frozen_init
    assert (snapshot / "conf" / "train.yaml").read_text() == frozen_train
    # A second launch into the same sweep folder gets its own copy; the first one stays as it was.
    second = snapshot_code(sweep_dir, source_root=live)
    assert second == sweep_dir / ".code-2"
    assert (second / "conf" / "train.yaml").read_text() == "edited: true\n"
    assert (snapshot / "conf" / "train.yaml").read_text() == frozen_train
    assert sorted(p.name for p in sweep_dir.iterdir()) == [".code", ".code-2"]


def test_snapshot_names_the_missing_folder_when_there_is_no_checkout(tmp_path):
    (tmp_path / "dcutmix").mkdir()
    with pytest.raises(ConfigError, match=r"^hydra\.launcher: .*hydra_plugins is not a folder"):
        snapshot_code(tmp_path / "sweep", source_root=tmp_path)


def test_rebased_config_loader_reads_the_snapshot_and_keeps_other_entries(tmp_path):
    Plugins.instance()  # registers the config sources (file://, pkg://) a loader is built from
    search_path = ConfigSearchPathImpl()
    search_path.append("hydra", "pkg://hydra.conf")
    search_path.append("main", f"file://{tmp_path / 'repo' / 'conf'}")
    search_path.append("command-line", str(tmp_path / "elsewhere"))
    loader = ConfigLoaderImpl(config_search_path=search_path)

    rebased, moved = rebase_config_loader(loader, tmp_path / "repo", tmp_path / "sweep" / ".code")

    assert moved == 1
    assert [(e.provider, e.path) for e in rebased.get_search_path().get_path()] == [
        ("hydra", "pkg://hydra.conf"),
        ("main", f"file://{tmp_path / 'sweep' / '.code' / 'conf'}"),
        ("command-line", str(tmp_path / "elsewhere")),
    ]
    assert [e.path for e in loader.get_search_path().get_path()][
        1
    ] == f"file://{tmp_path / 'repo' / 'conf'}"


def test_local_launcher_runs_as_many_jobs_at_once_as_cores_allow():
    cores = len(os.sched_getaffinity(0))
    assert FrozenLocalLauncher(cpus_per_task=1, gpus_per_node=0).parallel_jobs() == cores
    assert FrozenLocalLauncher(cpus_per_task=cores + 1).parallel_jobs() == 1
    assert FrozenLocalLauncher(cpus_per_task=1, gpus_per_node=1).parallel_jobs() == 1
    with pytest.raises(ConfigError, match=r"^hydra\.launcher\.cpus_per_task: "):
        FrozenLocalLauncher(cpus_per_task=0).parallel_jobs()


def test_queue_watcher_reads_squeue_and_ends_jobs_that_left_the_queue():
    watcher = QueueWatcher()
    for job_id in ("7_0", "7_1", "8"):
        watcher.register_job(job_id)
    states = watcher.read_info("7_0|RUNNING|node1\n7_1|PENDING|\n")
    assert {k: v["State"] for k, v in states.items()} == {
        "7_0": "RUNNING",
        "7_1": "PENDING",
        "8": "LEFT_QUEUE",
    }


@pytest.mark.parametrize(
    ("state", "done"),
    [
        ("RUNNING", False),
        ("CONFIGURING", False),
        ("SIGNALING", False),
        ("STAGE_OUT", False),
        ("SUSPENDED", False),
        ("COMPLETED", True),
        ("FAILED", True),
        ("REQUEUE_HOLD", True),
        ("LEFT_QUEUE", True),
    ],
)
def test_queue_watcher_waits_through_passing_states_and_ends_on_final_ones(state, done):
    watcher = QueueWatcher()
    watcher.register_job("9")
    watcher._info_dict.update(
        watcher.read_info(f"9|{state}|node1\n" if state != "LEFT_QUEUE" else "")
    )
    assert watcher.is_done("9", mode="cache") is done


def make_probe_tree(tmp_path: Path) -> Path:
    """A copy of the code with the probe app's config; the app edits it from its first job."""
    live = copy_code_tree(tmp_path / "live")
    (live / "conf" / "probe.yaml").write_text(PROBE_CONFIG)
    (tmp_path / "app.py").write_text(PROBE_APP)
    return live


def start_probe_sweep(tmp_path: Path, overrides: list[str]) -> tuple[subprocess.Popen, Path]:
    """Start the probe app's multirun in the copied tree (the worst directory to import from)."""
    live = make_probe_tree(tmp_path)
    sweep_dir = tmp_path / "sweep"
    env = {
        **os.environ,
        "PYTHONPATH": str(live),
        "PROBE_LIVE_ROOT": str(live),
        "PROBE_SWEEP_DIR": str(sweep_dir),
        "HYDRA_FULL_ERROR": "1",
    }
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "app.py"), "-m", *overrides],
        cwd=live,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, sweep_dir


def seen(sweep_dir: Path, job: int) -> list[dict]:
    path = sweep_dir / f"job{job}" / "seen.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_ran_frozen(record: dict, sweep_dir: Path) -> None:
    assert Path(record["dcutmix"]).is_relative_to(sweep_dir / ".code"), record
    assert (record["value"], record["marker"]) == ("original", None), record


@pytest.mark.slow
def test_local_sweep_runs_every_job_from_the_code_frozen_at_launch(tmp_path):
    cores = len(os.sched_getaffinity(0))
    # One job per wave: the later waves start after the first job has edited the working tree.
    process, sweep_dir = start_probe_sweep(
        tmp_path, ["idx=0,1,2", "hydra/launcher=local", f"hydra.launcher.cpus_per_task={cores}"]
    )
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output
    assert "PROBE_MARKER" in (tmp_path / "live" / "dcutmix" / "__init__.py").read_text()
    for job in range(3):
        (record,) = seen(sweep_dir, job)
        assert_ran_frozen(record, sweep_dir)
        assert record["threads"] == str(cores)


@pytest.mark.slurm
def test_a_small_batch_job_runs(tmp_path):
    slurm_partition = require_slurm()
    script = tmp_path / "hello.sh"
    script.write_text('#!/bin/bash\necho "hello from job $SLURM_JOB_ID on $(hostname)"\n')
    result = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--wait",
            f"--partition={slurm_partition}",
            "--mem=100M",
            f"--output={tmp_path}/%j.out",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    assert (tmp_path / f"{job_id}.out").read_text().startswith(f"hello from job {job_id} on ")


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_sweep_runs_frozen_code_before_and_after_a_requeue(tmp_path):
    slurm_partition = require_slurm()
    # Job 0 edits the working tree, then waits to be signalled like a job near its time limit;
    # submitit requeues it, and the second run, like job 1, must still see the frozen code.
    process, sweep_dir = start_probe_sweep(
        tmp_path,
        [
            "idx=0,1",
            "sleep=120",
            *slurm_launcher_overrides(slurm_partition),
            "hydra.launcher.array_parallelism=1",
        ],
    )
    try:
        wait_until(lambda: seen(sweep_dir, 0), 90, "job 0 to start")
        job_id = submitit_job_ids(sweep_dir)[0]
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        wait_until(lambda: job_state(job_id) == "PENDING", 60, f"job {job_id} to be requeued")
        release_requeue_hold(job_id)
        output, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            cancel_jobs(submitit_job_ids(sweep_dir))
    assert process.returncode == 0, output
    first, again = seen(sweep_dir, 0)
    (other,) = seen(sweep_dir, 1)
    assert (first["restart"], again["restart"]) == (0, 1)
    for record in (first, again, other):
        assert_ran_frozen(record, sweep_dir)
    if sacct_unavailable():
        assert "no Slurm job accounting here" in output
        assert "Bypassing sacct error" not in output


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_sweep_ends_when_a_job_dies_without_a_result(tmp_path):
    slurm_partition = require_slurm()
    # Without accounting sacct cannot say that a cancelled job ended; the sweep must still end.
    process, sweep_dir = start_probe_sweep(
        tmp_path, ["idx=0", "sleep=300", *slurm_launcher_overrides(slurm_partition)]
    )
    try:
        wait_until(lambda: seen(sweep_dir, 0), 90, "the job to start")
        subprocess.run(["scancel", *submitit_job_ids(sweep_dir)], check=True)
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            cancel_jobs(submitit_job_ids(sweep_dir))
    assert process.returncode != 0
    assert "has not produced any output" in output
