"""Performance machinery that must stay correct while it makes things faster: the thread policy
(TRAIN.THREADS, engine/threads.py), and run_all's GPU section on a machine without a GPU.

No assertion here is about time: choices are checked against a fake clock.
"""

import os

import pytest
import torch

import train
from engine import threads
from engine.errors import UserError
from engine.threads import ExtractionThreads, fastest_threads, parse_threads, pick, step_threads, thread_candidates

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def args_for(root, out, *extra):
    return [
        "--root", str(root), "--seed", "1", "--trainer", "BiomedCoOp_TinyBiomedCLIP",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, "configs/trainers/BiomedCoOp/few_shot/btmri.yaml"),
        "--output-dir", str(out), "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2",
        "DATALOADER.NUM_WORKERS", "0", *extra,
    ]


class FakeClock:
    """perf_counter for engine.threads: each call of `work` advances it by cost[torch threads]."""

    def __init__(self, cost: dict[int, float]):
        self.now, self.cost = 0.0, cost

    def perf_counter(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += self.cost[torch.get_num_threads()]


def test_thread_setting_is_parsed_and_bad_values_stop_with_one_line(tmp_path, capsys):
    assert parse_threads("auto") is None and parse_threads("AUTO") is None
    assert parse_threads("3") == 3 and parse_threads(2) == 2
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(UserError, match="TRAIN.THREADS must be auto or a whole number"):
            parse_threads(bad)
    # A number on the command line is accepted although the key's default is text.
    cfg = train.setup_cfg(train.parse_args(args_for(tmp_path, tmp_path / "out", "TRAIN.THREADS", "1")))
    assert cfg.TRAIN.THREADS == "1"
    assert train.main(args_for(tmp_path, tmp_path / "bad", "TRAIN.THREADS", "many")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: TRAIN.THREADS must be") and len(err.splitlines()) == 1


def test_candidates_and_ties_go_to_fewer_threads():
    assert thread_candidates(1) == [1]
    assert thread_candidates(2) == [1, 2]
    assert thread_candidates(6) == [1, 2, 4, 6]
    assert pick({1: 1.00, 2: 0.50}) == 2
    assert pick({1: 1.04, 2: 1.00}) == 1  # within 5%: the count less exposed to load
    assert pick({1: 1.00, 2: 5.00, 4: 0.99}) == 1


def test_fastest_threads_measures_each_count_and_puts_the_count_back(monkeypatch):
    clock = FakeClock({1: 0.6, 2: 5.4})  # a busy machine: the second thread waits for a core
    monkeypatch.setattr(threads.time, "perf_counter", clock.perf_counter)
    before = torch.get_num_threads()
    choice, seconds = fastest_threads(clock.work, [1, 2], rounds=3)
    assert choice == 1 and seconds == {1: pytest.approx(0.6), 2: pytest.approx(5.4)}
    assert torch.get_num_threads() == before
    clock.cost = {1: 0.2, 2: 0.15}  # a quiet one
    assert fastest_threads(clock.work, [1, 2])[0] == 2


def test_step_threads_fixed_auto_once_per_key_and_capped_by_omp(monkeypatch):
    clock = FakeClock({1: 0.3, 2: 0.1})
    monkeypatch.setattr(threads.time, "perf_counter", clock.perf_counter)
    monkeypatch.setattr(threads, "_chosen", {})
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    lines, calls = [], []

    def probe():
        calls.append(torch.get_num_threads())
        clock.work()

    assert step_threads("3", ("m",), probe, lines.append) == 3 and not calls  # a fixed count is not measured
    assert step_threads("auto", ("m",), probe, lines.append) == 2
    assert sorted(set(calls)) == [1, 2] and len(lines) == 1 and "2 thread(s)" in lines[0]
    calls.clear()
    assert step_threads("auto", ("m",), probe, lines.append) == 2  # the same size: measured once per process
    assert not calls and len(lines) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert step_threads("auto", ("other",), probe, lines.append) == 1 and not calls


def test_extraction_tries_each_count_on_real_batches_then_keeps_the_fastest(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    lines = []
    plan = ExtractionThreads("auto", batches=10, log=lines.append)
    used = []
    per_image = {1: 0.1, 2: 0.3}  # one thread is faster here
    for _ in range(10):
        n = plan.next()
        used.append(n)
        plan.record(n, 8, per_image[n] * 8)
    assert used == [2, 1, 2] + [1] * 7  # warm-up at the cores it has, one batch per count, then the fastest
    assert len(lines) == 1 and "extraction on 1 thread(s)" in lines[0]
    assert [ExtractionThreads("auto", batches=3).next() for _ in range(2)] == [2, 2]  # too few to measure
    fixed = ExtractionThreads("1", batches=10)
    assert {fixed.next() for _ in range(5)} == {1}


def test_trainer_probe_leaves_rng_and_modes_as_they_were(synthetic_btmri, tmp_path, monkeypatch):
    from engine.trainer import build_trainer

    monkeypatch.setattr(threads, "_chosen", {})
    cfg = train.setup_cfg(train.parse_args(args_for(synthetic_btmri, tmp_path / "run", "FEATURES.CACHE_DIR",
                                                    str(tmp_path / "cache"))))
    trainer = build_trainer(cfg)
    trainer.before_train()
    probe = trainer.thread_probe()
    assert probe is not None
    trainer.set_model_mode("train")
    modules = [*trainer.backbone.modules(), *trainer.prompt_learner.modules()]
    modes = [m.training for m in modules]
    state = torch.get_rng_state()
    probe()
    assert torch.equal(torch.get_rng_state(), state)
    assert modes == [m.training for m in modules]
