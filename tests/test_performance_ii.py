"""Performance machinery that must stay correct while it makes things faster: the thread policy
(TRAIN.THREADS, engine/threads.py), and run_all's GPU section on a machine without a GPU.

No assertion here is about time: choices are checked against a fake clock.
"""

import os
import subprocess
import sys

import pytest
import torch

import train
from engine import threads
from engine.errors import UserError
from engine.threads import (
    ExtractionThreads,
    StepThreads,
    fastest_threads,
    parse_threads,
    pick,
    step_threads,
    thread_candidates,
)

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


def encode_job(plan, images: int, cost, batch: int = 64) -> list:
    """Drive `plan` over a job of `images` images in loader batches of `batch`, as engine/features.py
    does; `cost(done, threads)` is the seconds per image of a chunk starting at image `done` (a fake
    clock: nothing is timed). The (images, threads) of each tower call."""
    calls, done = [], 0
    while done < images:
        for x, n in plan.chunks(torch.zeros(min(batch, images - done), 1), 25):
            calls.append((len(x), n))
            plan.record(n, len(x), cost(done, n) * len(x))
            done += len(x)
    assert sum(n for n, _ in calls) == images  # every image once
    assert plan.run == {t: sum(n for n, c in calls if c == t) for t in {c for _, c in calls}}
    return calls


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "_chosen", {})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_extraction_tries_each_count_twice_on_chunks_of_the_working_size_then_keeps_the_fastest(two_cores):
    lines = []
    per_image = {1: 0.1, 2: 0.3}  # one thread is faster here

    assert ExtractionThreads.TRIAL == 25  # the CPU tower chunk: counts compared as the job will use them
    plan = ExtractionThreads("auto", images=160, key="m", log=lines.append)
    calls = encode_job(plan, 160, lambda done, n: per_image[n], batch=100)
    # Two interleaved rounds of one trial chunk per count, then the fastest in chunks of 25.
    assert calls == [(25, 1), (25, 2), (25, 1), (25, 2), (25, 1), (25, 1), (10, 1)]
    assert len(lines) == 1 and "extraction on 1 thread(s)" in lines[0]
    # A job too small to measure uses what the process chose for that model; another model, its cores.
    assert ExtractionThreads.trial_images(2) == 100
    small = encode_job(ExtractionThreads("auto", images=99, key="m"), 99, lambda d, n: 1.0, batch=99)
    assert small == [(25, 1)] * 3 + [(24, 1)]
    assert encode_job(ExtractionThreads("auto", images=8, key="other"), 8, lambda d, n: 1.0) == [(8, 2)]
    assert {n for _, n in encode_job(ExtractionThreads("1", images=60, key="x"), 60, lambda d, n: 1.0)} == {1}


def test_one_slow_trial_does_not_decide_the_job_and_a_slower_count_is_not_chosen(two_cores):
    # 2 threads are faster, but a slow moment falls on their first trial chunk (images 25-49): under one
    # chunk per count that chose 1 thread for the whole job.
    def slow_moment(done, n):
        return 0.6 if n == 2 and done == 25 else {1: 0.25, 2: 0.15}[n]

    lines = []
    calls = encode_job(ExtractionThreads("auto", images=150, key="m", log=lines.append), 150, slow_moment, batch=50)
    assert calls[4:] == [(25, 2), (25, 2)] and "extraction on 2 thread(s)" in lines[0]
    # 2 threads really slower; a slow moment on 1 thread's first chunk does not make 2 look faster.
    def slower(done, n):
        return 0.6 if n == 1 and done == 0 else {1: 0.25, 2: 0.3}[n]

    calls = encode_job(ExtractionThreads("auto", images=150, key="m2"), 150, slower, batch=50)
    assert calls[4:] == [(25, 1), (25, 1)]


def test_long_job_rechecks_and_switches_when_the_other_count_becomes_clearly_faster(two_cores):
    lines = []
    # 2 threads faster until image 1000, when another process takes a core: 2 threads get slow.
    def load_arrives(done, n):
        return {1: 0.25, 2: 0.15 if done < 1000 else 0.5}[n]

    plan = ExtractionThreads("auto", images=3000, key="m", log=lines.append)
    calls = encode_job(plan, 3000, load_arrives, batch=50)
    counts = [n for _, n in calls]
    assert counts[:4] == [1, 2, 1, 2] and counts[4:12] == [2] * 8  # trials, then 8 chunks at the choice
    assert counts[12] == 1  # the first re-check: 1 thread is slower, so 2 stays
    assert counts[13:29] == [2] * 16 and counts[29] == 1  # twice as long before the next re-check
    # The load arrives at chunk 40; the next re-check (chunk 62, after 32 more) finds 1 thread faster.
    first_one = counts.index(1, 40)
    assert first_one == 62 and counts[63:71] == [1] * 8
    assert len(lines) == 2 and "extraction on 2 thread(s)" in lines[0]
    assert "switches from 2 to 1 thread(s)" in lines[1]
    assert threads._chosen[("extraction", "m")] == 1  # a small job of the same model follows the switch
    # Re-checks of 2 threads go on, one chunk each, but 2 threads stay slower: no switch back.
    later = counts[first_one:]
    assert 2 in later and all(a == 1 or b == 1 for a, b in zip(later, later[1:])) and plan.choice == 1
    assert plan.run[1] + plan.run[2] == 3000


def test_recheck_switch_to_fewer_threads_within_the_tie_and_short_chunks_are_not_compared(two_cores):
    # 2 threads chosen; later 1 thread is within 5%: the count less exposed to load wins, as at the start.
    def converge(done, n):
        return {1: 0.25 if done < 300 else 0.152, 2: 0.15}[n]

    plan = ExtractionThreads("auto", images=600, key="m")
    calls = encode_job(plan, 600, converge, batch=50)
    assert [n for _, n in calls][:12] == [1, 2, 1, 2] + [2] * 8 and plan.choice == 1
    # Batches of 30: each ends with a 5-image chunk, slow per image; it neither counts as a trial nor
    # moves the trials on, so the choice still comes from four full chunks.
    def short_slow(done, n):
        return {1: 0.25, 2: 0.15}[n]

    plan = ExtractionThreads("auto", images=200, key="m3")
    calls = encode_job(plan, 200, lambda d, n: 5.0 if n == 2 and d % 30 == 25 else short_slow(d, n), batch=30)
    assert [c for c in calls if c[0] == 25][:4] == [(25, 1), (25, 2), (25, 1), (25, 2)]
    assert plan.choice == 2 and plan.samples[2] == [0.15, 0.15]


def test_one_slow_probe_sample_does_not_decide_the_step(monkeypatch, two_cores):
    # 2 threads are faster, but a slow moment falls on their first timed probe (after the warm-ups): the
    # mean of two samples (the median of two) chose 1 thread; each count's best chooses 2.
    clock, calls = FakeClock({1: 0.3, 2: 0.1}), []
    monkeypatch.setattr(threads.time, "perf_counter", clock.perf_counter)

    def probe():
        calls.append(torch.get_num_threads())
        clock.now += 0.6 if len(calls) == 4 else clock.cost[calls[-1]]

    lines = []
    assert step_threads("auto", ("m",), probe, lines.append) == 2
    assert calls == [1, 2, 1, 2, 1, 2] and "best of 2" in lines[0] and "2 thread(s)" in lines[0]


def drive_steps(plan: StepThreads, clock: FakeClock, steps: int, cost, full=lambda i: True) -> list[int]:
    """Run `steps` fake training steps through `plan`, as engine/trainer.py run_epoch does; `cost(i,
    threads)` is step i's seconds on the fake clock. The thread count of each step."""
    counts = []
    for i in range(steps):
        with plan.step(full=full(i)):
            counts.append(torch.get_num_threads())
            clock.now += cost(i, counts[-1])
    return counts


def test_training_rechecks_the_step_count_and_switches_once_when_another_is_clearly_faster(monkeypatch, two_cores):
    clock, lines = FakeClock({}), []
    monkeypatch.setattr(threads.time, "perf_counter", clock.perf_counter)
    before = torch.get_num_threads()
    # 2 threads chosen before training and faster until step 100, when another process takes a core.
    plan = StepThreads("auto", ("m",), 2, lines.append)
    counts = drive_steps(plan, clock, 400, lambda i, n: {1: 0.3, 2: 0.1 if i < 100 else 0.9}[n])
    r = StepThreads.RECHECK
    assert counts[:r] == [2] * r and counts[r] == 1  # a re-check: one real step at 1 thread; 2 stays
    assert counts[r + 1 : 3 * r + 1] == [2] * (2 * r) and counts[3 * r + 1] == 1  # the gap doubles
    # The re-check after 64 more steps (step 114) compares the median step since the last check, most of
    # them before the load: 2 stays. The next, 128 steps later, finds 1 thread faster and switches.
    assert counts[3 * r + 2 : 7 * r + 2] == [2] * (4 * r) and counts[7 * r + 2] == 1
    switch = counts.index(1, 7 * r + 3)
    assert switch == 15 * r + 3 and counts[switch + 1 : switch + 1 + r] == [1] * r
    assert len(lines) == 1 and "training step switches from 2 to 1 thread(s)" in lines[0]
    assert plan.choice == 1 and threads._chosen[("m",)] == 1  # the next run of this size starts there
    assert 2 in counts[switch + 1 :] and sum(plan.run.values()) == 400  # re-checks go on; 2 stays slower
    torch.set_num_threads(before)


def test_a_short_step_is_not_compared_and_a_fixed_count_or_one_core_never_rechecks(monkeypatch, two_cores):
    clock, lines = FakeClock({}), []
    monkeypatch.setattr(threads.time, "perf_counter", clock.perf_counter)
    before = torch.get_num_threads()
    r = StepThreads.RECHECK
    # The step that re-checks 1 thread is an epoch's short last batch (fast): it is not compared, and the
    # next full step re-checks instead; at full size 1 thread is slower, so 2 stays.
    plan = StepThreads("auto", ("m",), 2, lines.append)
    counts = drive_steps(plan, clock, r + 3, lambda i, n: 0.01 if i == r else {1: 0.3, 2: 0.1}[n],
                         full=lambda i: i != r)
    assert counts[r : r + 3] == [1, 1, 2] and plan.choice == 2 and not lines
    # TRAIN.THREADS 2 (set before training): 1 thread is far faster, and no step is ever run at it.
    fixed = StepThreads("2", ("m",), 2, lines.append)
    torch.set_num_threads(2)
    assert set(drive_steps(fixed, clock, 300, lambda i, n: {1: 0.1, 2: 5.0}[n])) == {2}
    assert fixed.plan is None and fixed.choice == 2 and not lines
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert StepThreads("auto", ("m",), 1, lines.append).plan is None
    torch.set_num_threads(before)


def train_tiny(root, out, monkeypatch, setting):
    from engine.trainer import build_trainer
    from engine.utils import set_random_seed

    set_random_seed(1)
    cfg = train.setup_cfg(train.parse_args(args_for(root, out, "FEATURES.CACHE_DIR", str(out.parent / "cache"),
                                                    "TRAIN.THREADS", setting)))
    trainer = build_trainer(cfg)
    trainer.before_train()
    for epoch in range(trainer.max_epoch):
        trainer.epoch = epoch
        trainer.run_epoch()
        trainer.after_epoch()
    return trainer, trainer.test(), trainer.prompt_learner.ctx.detach().clone()


def test_the_generic_training_loop_runs_the_rechecks(synthetic_btmri, tmp_path, monkeypatch, two_cores):
    monkeypatch.setattr(StepThreads, "RECHECK", 1)
    monkeypatch.setattr(StepThreads, "RECHECK_MAX", 1)
    before = torch.get_num_threads()
    trainer, _, _ = train_tiny(synthetic_btmri, tmp_path / "run", monkeypatch, "auto")
    plan = trainer.step_plan
    # Every other step re-checks: real steps at both counts, each step once, and the chosen count after.
    assert set(plan.run) == {1, 2} and sum(plan.run.values()) == trainer.num_batches * trainer.max_epoch
    assert torch.get_num_threads() == plan.choice
    torch.set_num_threads(before)


def test_auto_on_one_core_trains_exactly_as_one_fixed_thread(synthetic_btmri, tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "_chosen", {})
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # thread_limit() 1: auto has nothing to choose
    auto, report_auto, ctx_auto = train_tiny(synthetic_btmri, tmp_path / "auto", monkeypatch, "auto")
    fixed, report, ctx = train_tiny(synthetic_btmri, tmp_path / "fixed", monkeypatch, "1")
    assert auto.step_plan.plan is None and fixed.step_plan.plan is None
    assert torch.equal(ctx_auto, ctx) and report_auto["accuracy"] == report["accuracy"]


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


def test_run_all_device_cuda_without_a_gpu_says_so_in_one_line_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks/run_all.py"), "--device", "cuda"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0]


def test_device_sections_run_every_precision_and_family_through_the_real_trainers(tmp_path, monkeypatch):
    """The code --device cuda runs, here on the CPU with the tiny twin: fp32 and fp16 (the one with a
    gradient scaler) give figures for every family (a failure would be printed and leave its entry out)."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import run_all

    run_all.load_heavy()
    figures = run_all.device_sections(torch.device("cpu"), True, str(tmp_path / "data"), str(tmp_path),
                                      precisions=("fp32", "fp16"), backbone="TinyBiomedCLIP", beside_cpu=False)
    for precision in ("fp32", "fp16"):
        assert figures[("extract", precision)] > 0
        for family in run_all.FAMILIES:
            r = figures[(family, "cpu", precision)]
            assert r["steps_per_s"] > 0 and r["whole_h"] > 0 and r["peak_gb"] > 0


def test_a_cached_feature_run_frees_its_image_tower_and_gets_the_same_numbers(synthetic_btmri, tmp_path, monkeypatch):
    from engine.trainer import TrainerX, build_trainer
    from engine.utils import set_random_seed

    def run(out, keep):
        monkeypatch.setattr(TrainerX, "keeps_image_tower", keep)
        set_random_seed(1)
        cfg = train.setup_cfg(train.parse_args(args_for(synthetic_btmri, tmp_path / out, "FEATURES.CACHE_DIR",
                                                        str(tmp_path / "cache"), "TRAIN.THREADS", "1")))
        trainer = build_trainer(cfg)
        key = trainer.backbone.cache_key()
        trainer.before_train()
        for epoch in range(trainer.max_epoch):
            trainer.epoch = epoch
            trainer.run_epoch()
            trainer.after_epoch()
        return trainer, key, trainer.test(), trainer.prompt_learner.ctx.detach().clone()

    kept, key_kept, report_kept, ctx_kept = run("kept", True)
    freed, key, report, ctx = run("freed", False)
    assert all(p.numel() > 0 for p in kept.backbone.image_tower.parameters())
    assert all(p.numel() == 0 for p in freed.backbone.image_tower.parameters())
    assert freed.backbone.cache_key() == key == key_kept  # caches still match the model
    assert torch.equal(ctx, ctx_kept) and report["accuracy"] == report_kept["accuracy"]
    with pytest.raises(RuntimeError, match="image tower was released"):
        freed.backbone.encode_image(torch.zeros(1, 3, freed.backbone.image_size, freed.backbone.image_size))


def test_a_pixel_method_keeps_its_image_tower(synthetic_btmri, tmp_path):
    from engine.trainer import build_trainer

    args = args_for(synthetic_btmri, tmp_path / "maple", "TRAIN.THREADS", "1")
    args[args.index("--trainer") + 1] = "MaPLe_TinyBiomedCLIP"
    args[args.index("--config-file") + 1] = os.path.join(REPO, "configs/trainers/MaPLe/default.yaml")
    trainer = build_trainer(train.setup_cfg(train.parse_args(args)))
    trainer.before_train()
    assert all(p.numel() > 0 for p in trainer.backbone.image_tower.parameters())


def test_extraction_decodes_at_one_thread_and_runs_the_tower_at_its_own_count(synthetic_btmri, tiny_biomedclip,
                                                                               tmp_path, monkeypatch):
    """Images decoded in the extracting process are cropped at DECODE_THREADS (a 2-thread pool on busy
    cores made those tiny operations many times slower); the tower keeps TRAIN.THREADS' count, the
    caller's count is put back, and the features are those of the plain transform + tower."""
    from engine import features
    from engine.config import get_cfg_default
    from engine.data import DataManager, build_transform, transform_spec
    from engine.features import FeatureCache

    cfg = get_cfg_default()
    cfg.merge_from_file(os.path.join(REPO, "configs/datasets/btmri.yaml"))
    cfg.DATASET.ROOT, cfg.DATALOADER.NUM_WORKERS = synthetic_btmri, 0
    items = DataManager(cfg).dataset.test[:12]
    tfm, spec = build_transform(cfg, False), transform_spec(cfg, False)
    seen = {"decode": set(), "tower": set()}

    def transform(img):
        seen["decode"].add(torch.get_num_threads())
        return tfm(img)

    encode = tiny_biomedclip.encode_image

    def counted(x):
        seen["tower"].add(torch.get_num_threads())
        return encode(x)

    monkeypatch.setattr(tiny_biomedclip, "encode_image", counted)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        feats = FeatureCache(str(tmp_path / "cache"), tiny_biomedclip, torch.device("cpu"), batch_size=5, workers=0,
                             threads="2").get(items, transform, spec)[0]
        after = torch.get_num_threads()
        with torch.no_grad():
            expected = encode(torch.stack([tfm(features.read_image(d.impath)) for d in items]))
    finally:
        torch.set_num_threads(before)
    assert seen == {"decode": {features.DECODE_THREADS}, "tower": {2}} and after == 2
    assert torch.allclose(feats, expected.float(), atol=1e-6)


def test_run_all_thread_policy_pools_auto_with_the_count_it_chose_and_still_shows_a_wrong_choice():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import run_all

    # Auto chose 1 thread, the fastest: its own slots drew slower samples than 1 thread's fixed slots (noise
    # between two medians of one configuration); pooled, auto is 1 thread's cost.
    times = {1: [0.40, 0.42, 0.41], 2: [1.9, 2.0, 2.1], "auto": [0.47, 0.48, 0.46]}
    fig = run_all.policy_figures(times, auto=1)
    assert fig["median"]["auto"] == 0.47 and fig["chosen"] == pytest.approx(0.44)
    assert fig["vs_best"] == 1.0 and fig["vs_one"] == 1.0
    # Auto chose 2 threads where 1 is four times faster: the figure says so.
    wrong = run_all.policy_figures(times, auto=2)
    assert wrong["vs_best"] > 1.10 and wrong["vs_one"] > 1.10


@pytest.mark.parametrize("cores, expected", [(2, 0), (4, 2)])
def test_extraction_on_a_cpu_with_two_cores_decodes_in_process(synthetic_btmri, tiny_biomedclip, tmp_path,
                                                              monkeypatch, cores, expected):
    """On a CPU with CPU_IN_PROCESS_CORES cores or fewer the tower's threads take every core, so a job of
    several batches gets no loader workers; with more cores it gets them (up to one per batch after the first)."""
    from engine import features
    from engine.config import get_cfg_default
    from engine.data import DataManager, build_transform, transform_spec

    cfg = get_cfg_default()
    cfg.merge_from_file(os.path.join(REPO, "configs/datasets/btmri.yaml"))
    cfg.DATASET.ROOT, cfg.DATALOADER.NUM_WORKERS = synthetic_btmri, 0
    items = DataManager(cfg).dataset.test[:12]
    asked = []
    real_loader = features.DataLoader

    def loader(dataset, num_workers, prefetch_factor, **kwargs):
        asked.append(num_workers)  # then load in this process: the count asked for is what is checked
        return real_loader(dataset, num_workers=0, **kwargs)

    monkeypatch.setattr(features, "available_cores", lambda: cores)
    monkeypatch.setattr(features, "DataLoader", loader)
    cache = features.FeatureCache(str(tmp_path / "cache"), tiny_biomedclip, torch.device("cpu"), batch_size=4,
                                  workers=8, threads="1")
    feats = cache.get(items, build_transform(cfg, False), transform_spec(cfg, False))
    assert asked == [expected] and feats.shape[:2] == (1, len(items))
