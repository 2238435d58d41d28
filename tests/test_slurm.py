"""tools/sweep.py --launcher slurm on a real single-node SLURM cluster (tests/slurm_cluster.py): the
encoding array and the dependent run array, --max-concurrent, packing, status, a failed run and
--retry-failed, the table; a job given SLURM's pre-termination signal requeues and finishes identical
to an uninterrupted run; a job scancelled mid-run resumes when the sweep is run again (no option: it
reads as interrupted, not failed).

The cluster is installed (apt-get, as root) and started once per module; where it cannot be, the
tests skip with the reason in one line."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import sweep
import torch
from slurm_cluster import SlurmCluster, install

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 TRAIN.REPORT_TO none"
# Long enough to be signalled mid-run (a few seconds), cheap to cache: one training view.
LONG = "OPTIM.MAX_EPOCH 1000 FEATURES.TRAIN_VIEWS 1 DATALOADER.NUM_WORKERS 0 TRAIN.REPORT_TO none"
RUN = "btmri/shots_2/CoOp_TinyBiomedCLIP/nctx4_cscFalse_ctpend"


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("submitit")
    reason = install()
    if reason:
        pytest.skip(f"no SLURM cluster for these tests: {reason}")
    folder = tempfile.mkdtemp(prefix="slurm-")  # short (munge's socket path) and outside pytest's rotation
    c = SlurmCluster(folder).start()
    yield c
    c.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", cluster.conf)  # sbatch, squeue, scontrol (submitit's too) find it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return cluster


def queue(cluster) -> list[str]:
    return cluster.run("squeue", "-h", "-o", "%i %T %r").stdout.split("\n")[:-1]


def wait_empty(cluster, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        jobs = queue(cluster)
        if not jobs:
            return
        for job in jobs:  # SLURM holds a requeued job about two minutes (BeginTime): release it now
            if job.endswith(" PENDING BeginTime"):
                cluster.run("scontrol", "update", f"JobId={job.split()[0]}", "StartTime=now", check=False)
        time.sleep(1)
    raise AssertionError(f"jobs still queued after {timeout}s: {queue(cluster)}")


def base(root, out, seeds=("1",), extra=FAST):
    return ["--root", root, "--methods", "CoOp", "--datasets", "btmri", "--shots", "2", "--seeds", *seeds,
            "--models", "TinyBiomedCLIP", "--output-root", str(out), "--extra-opts", extra, "--launcher", "slurm",
            "--time", "20", "--cpus", "1", "--gpus", "0"]


def test_sweep_arrays_status_retry_and_table(on_cluster, synthetic_btmri, tmp_path, capsys):
    out = tmp_path / "out"
    sweep_dir = str(out / "sweeps" / "sweep")
    blocked = out / RUN / "seed3"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the run folder should be")  # makes that run fail
    # Packing: tiny jobs (--job-minutes) put each run in a job of its own; two at a time (--max-concurrent).
    argv = [*base(synthetic_btmri, out, ("1", "2", "3")), "--job-minutes", "0.001", "--max-concurrent", "2",
            "--signal-delay", "120"]
    assert sweep.main(argv) == 0
    assert "submitted 1 encoding job(s) and 3 run job(s)" in capsys.readouterr().out
    scripts = "".join(open(p).read() for p in glob.glob(os.path.join(sweep_dir, "submitit", "*_submission.sh")))
    assert "#SBATCH --signal=USR2@120" in scripts and "#SBATCH --time=20" in scripts
    jobs = on_cluster.run("scontrol", "show", "job").stdout
    assert "Dependency=afterany:" in jobs  # the run array waits for the encoding array
    assert "ArrayTaskThrottle=2" in jobs
    wait_empty(on_cluster)
    assert glob.glob(os.path.join(sweep_dir, "submitit", "*_2_0_log.out"))  # the third array task ran on SLURM
    assert sweep.main(["status", sweep_dir]) == 0
    report = capsys.readouterr().out
    assert "3 runs: 2 finished, 0 stale, 1 failed, 0 running, 0 pending" in report
    assert "FAILED CoOp btmri TinyBiomedCLIP K=2 seed 3" in report
    assert sweep.main(argv) == 1  # nothing submitted: the summary, which is not all finished
    assert "1 failed, 0 to run" in capsys.readouterr().out  # not retried unless asked
    blocked.unlink()
    assert sweep.main([*argv, "--retry-failed"]) == 0
    wait_empty(on_cluster)
    assert sweep.main(["status", sweep_dir]) == 0
    assert "3 runs: 3 finished" in capsys.readouterr().out

    table = subprocess.run([sys.executable, "tools/make_tables.py", str(out), "--format", "csv"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    accuracies = [json.load(open(p))["accuracy"] for p in glob.glob(str(out / RUN / "seed*/results.json"))]
    (row,) = [line.split(",") for line in table.stdout.splitlines()
              if line.startswith("few_shot,CoOp,TinyBiomedCLIP,BTMRI,2,")]
    assert abs(float(row[6]) - sum(accuracies) / 3) < 1e-3 and row[8] == "3"  # the mean over the 3 seeds


def job_of(cluster, run) -> str:
    """The running run job's id, once the train.py it runs has logged an epoch."""
    end = time.time() + 240
    while time.time() < end:
        running = [j.split()[0] for j in queue(cluster) if " RUNNING " in f" {j} "]
        log = run / "log.txt"
        if running and log.exists() and "epoch [" in log.read_text():
            return running[0]
        time.sleep(0.2)
    raise AssertionError(f"no run job reached its first epoch: {queue(cluster)}")


@pytest.fixture(scope="module")
def reference(synthetic_btmri, tmp_path_factory):
    """The run both tests interrupt, made without the cluster and uninterrupted."""
    ref = tmp_path_factory.mktemp("reference")
    argv = [sys.executable, "train.py", "--root", synthetic_btmri, "--seed", "1", "--trainer", "CoOp_TinyBiomedCLIP",
            "--dataset-config-file", "configs/datasets/btmri.yaml", "--config-file",
            "configs/trainers/CoOp/vit_b16.yaml", "--output-dir", str(ref), "DATASET.NUM_SHOTS", "2", *LONG.split()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return ref


def same_result(run, ref):
    a, b = (json.load(open(p / "results.json")) for p in (run, ref))
    assert a["accuracy"] == b["accuracy"] and a["macro_f1"] == b["macro_f1"]
    (ca,), (cb,) = (glob.glob(str(p / "prompt_learner" / "model.pth.tar-*")) for p in (run, ref))
    ta, tb = (torch.load(c, map_location="cpu", weights_only=False)["state_dict"] for c in (ca, cb))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_the_pre_termination_signal_requeues_and_resumes_to_the_same_result(
        on_cluster, synthetic_btmri, reference, tmp_path):
    out = tmp_path / "out"
    run = out / RUN / "seed1"
    assert sweep.main(base(synthetic_btmri, out, extra=LONG)) == 0
    job = job_of(on_cluster, run)
    # What SLURM sends --signal's seconds before the time limit (and on preemption), to the job's steps.
    on_cluster.run("scancel", "--signal=USR2", job)
    wait_empty(on_cluster)
    logs = "".join(open(p).read() for p in glob.glob(str(run / "log.txt*")))
    errs = "".join(open(p).read() for p in glob.glob(str(out / "sweeps/sweep/logs/*.log")))
    stopped = re.search(r"stopped after epoch (\d+) of 1000 on a pre-termination signal \(SIGUSR2\)", errs)
    assert stopped, errs[-2000:]
    assert f": {stopped.group(1)} of 1000 epochs already done" in logs  # the requeued job resumed from there
    submitit_logs = "".join(open(p).read() for p in glob.glob(str(out / "sweeps/sweep/submitit/*log.err")))
    assert "this job is preempted" in submitit_logs and "DUE TO JOB REQUEUE" in submitit_logs
    same_result(run, reference)


def test_a_cancelled_job_resumes_when_the_sweep_runs_again(on_cluster, synthetic_btmri, reference, tmp_path, capsys):
    out = tmp_path / "out"
    run = out / RUN / "seed1"
    argv = base(synthetic_btmri, out, extra=LONG)
    assert sweep.main(argv) == 0
    on_cluster.run("scancel", job_of(on_cluster, run))
    wait_empty(on_cluster)
    assert (run / "resume.pth").exists() and not (run / "results.json").exists()
    capsys.readouterr()
    assert sweep.main(["status", str(out / "sweeps" / "sweep")]) == 0
    assert "INTERRUPTED CoOp btmri TinyBiomedCLIP K=2 seed 1: stopped after epoch" in capsys.readouterr().out
    assert sweep.main(argv) == 0  # an interrupted run resumes without --retry-failed
    assert "1 runs: 1 interrupted, 1 to run" in capsys.readouterr().out
    wait_empty(on_cluster)
    logs = "".join(open(p).read() for p in glob.glob(str(run / "log.txt*")))
    assert "already done" in logs
    same_result(run, reference)
