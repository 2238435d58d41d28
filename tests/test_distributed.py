"""Two gloo processes under torchrun train CLIP-LoRA to the same tensors as one process with the same
global batch, stop on the pre-termination signal at an epoch end, and resume to the same end; a
method on cached features refuses in one line."""

import glob
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TinyCLIP (open_clip towers, no dropout) and no random augmentation: every random draw is the data
# order, which all processes share, so one process and two give the same step up to summation order.
OPTS = ["DATASET.NUM_SHOTS", "4", "TRAINER.CLIPLORA.DROPOUT", "0.0", "TRAINER.CLIPLORA.ITERS_PER_SHOT", "2",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "6", "DATALOADER.NUM_WORKERS", "0", "INPUT.TRANSFORMS", '["normalize"]',
        "TRAIN.REPORT_TO", "none"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


def command(root, out, trainer="CLIPLoRA_TinyCLIP", config="configs/trainers/CLIPLoRA/default.yaml"):
    return ["train.py", "--root", root, "--seed", "1", "--trainer", trainer, "--output-dir", str(out),
            "--dataset-config-file", "configs/datasets/btmri.yaml", "--config-file", config, *OPTS]


def torchrun(argv, nproc=2):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(port), *argv]


def learned(run_dir):
    (path,) = glob.glob(os.path.join(run_dir, "lora", "model.pth.tar-*"))
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def small_btmri(tmp_path_factory):
    """A synthetic BTMRI whose 4-shot split has 8 training images (2 a class): batches of 6 and 2."""
    from make_synthetic_dataset import write_dataset

    root = tmp_path_factory.mktemp("ddp-data")
    write_dataset(str(root), "BTMRI", per_class=5, size=32)
    return str(root)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def test_two_processes_equal_one_and_resume_after_the_stop_signal(small_btmri, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    done = subprocess.run([sys.executable, *command(small_btmri, single)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    # Two processes; the stop signal once rank 0's log opens: both stop at the same epoch end, resumable.
    proc = subprocess.Popen(torchrun(command(small_btmri, multi)), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not (multi / "log.txt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = children(proc.pid)
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGUSR2)  # what SLURM's --signal=USR2@N sends
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "on a pre-termination signal (SIGUSR2)" in output, output[-3000:]
    assert (multi / "resume.pth").exists() and not (multi / "results.json").exists()
    assert not (multi / ".run.lock").exists()
    stopped_at = torch.load(multi / "resume.pth", weights_only=False)["lora"]["epoch"]
    assert 1 <= stopped_at < 4

    done = subprocess.run(torchrun(command(small_btmri, multi)), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = "".join(open(p).read() for p in glob.glob(str(multi / "log.txt*")))  # the rerun starts log.txt-<time>
    assert f"Resuming from {multi / 'resume.pth'}: {stopped_at} of 4 epochs already done" in log
    assert not (multi / "resume.pth").exists() and (multi / "results.json").exists()
    a, b = learned(single), learned(multi)
    assert a.keys() == b.keys()
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k)  # training moved the zero-started B
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)


def test_a_method_on_cached_features_refuses_under_torchrun(small_btmri, tmp_path):
    done = subprocess.run([sys.executable, *command(small_btmri, tmp_path / "coop", "CoOp_TinyBiomedCLIP",
                                                    "configs/trainers/CoOp/vit_b16.yaml")],
                          cwd=REPO, env={**ENV, "WORLD_SIZE": "2", "RANK": "0"}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "error: CoOp trains on cached image features" in done.stderr and "not under torchrun" in done.stderr


def test_the_sweep_runs_pixel_path_training_under_torchrun():
    from sweeps.launch import train_command

    lora = [sys.executable, "/r/train.py", "--trainer", "CLIPLoRA_TinyBiomedCLIP", "--seed", "1"]
    assert train_command(lora, 2) == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                      "--nproc_per_node", "2", *lora[1:]]
    assert train_command(lora, 1) == lora
    assert train_command([*lora, "--eval-only"], 2) == [*lora, "--eval-only"]  # evaluation: one process
    coop = [sys.executable, "/r/train.py", "--trainer", "CoOp_TinyBiomedCLIP"]
    assert train_command(coop, 2) == coop  # cached features: one process


def test_local_sweep_with_gpus_per_job_trains_under_torchrun(synthetic_btmri, tmp_path, capsys):
    import sweep

    out = tmp_path / "out"
    argv = ["--root", synthetic_btmri, "--methods", "CLIPLoRA", "--datasets", "btmri", "--shots", "1", "--seeds", "1",
            "--models", "TinyCLIP", "--output-root", str(out), "--gpus-per-job", "2",
            "--extra-opts", "TRAIN.TRIAL_EPOCHS 1 DATALOADER.NUM_WORKERS 0 TRAIN.REPORT_TO none"]
    assert sweep.main(argv) == 0, capsys.readouterr()
    (log,) = glob.glob(str(out / "sweeps/sweep/logs/few_shot-*.log"))  # the run's, beside the encoding's
    assert "-m torch.distributed.run --standalone --nproc_per_node 2 " in open(log).read()
    assert len(glob.glob(str(out / "btmri/shots_1/CLIPLoRA_TinyCLIP/*/seed1/results.json"))) == 1


def test_nproc_runs_the_scripts_training_under_torchrun_and_their_evaluation_as_one(tmp_path):
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"  # records each call; a torchrun call is only recorded (the test above runs one)
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *torch.distributed.run*) exit 0;; esac\n'
                    f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    env = {**ENV, "PYTHON": str(fake), "NPROC": "2", "SEEDS": "1", "OUTPUT_ROOT": str(tmp_path / "out")}
    done = subprocess.run(["bash", "scripts/clip_lora/base2new.sh", "DATA", "btmri", "TinyCLIP"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = calls.read_text().splitlines()
    trains = [line for line in lines if "train.py" in line and "--print-model-label" not in line]
    assert trains and trains[0].startswith("-m torch.distributed.run --standalone --nproc_per_node 2 "), done.stderr
    assert "--eval-only" not in trains[0]
    assert all("torch.distributed.run" not in line for line in trains if "--eval-only" in line)


def test_a_prompt_method_on_pixels_maple_also_equals_one_process(small_btmri, tmp_path):
    """MaPLe steps through TrainerX.model_update (CLIP-LoRA through its own step): both paths average."""
    opts = ["DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "6", "INPUT.TRANSFORMS", '["normalize"]', "TRAIN.REPORT_TO", "none"]
    def argv(out):
        return ["train.py", "--root", small_btmri, "--seed", "1", "--trainer", "MaPLe_TinyCLIP", "--output-dir",
                str(tmp_path / out), "--dataset-config-file", "configs/datasets/btmri.yaml", "--config-file",
                "configs/trainers/MaPLe/default.yaml", *opts]

    for cmd in ([sys.executable, *argv("single")], torchrun(argv("multi"))):
        done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = (torch.load(glob.glob(str(tmp_path / out / "prompt_learner" / "model.pth.tar-2"))[0],
                       weights_only=False)["state_dict"] for out in ("single", "multi"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)
