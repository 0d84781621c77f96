"""One-shot search: the evaluator, its phases and resume, the final stand-alone step, DARTS, the presets.

Everything is tiny (digits, 300 training images, N=1, F=4, 2 blocks of cheap ops) so it runs in seconds.
"""
import pickle
import random
import sys

import pytest
import timm
import torch

from cellsearch.validation import ConfigError
from cellsearch.evaluators import OneShotEvaluator
from cellsearch.evaluators.base import EvalResult, failed_result
from cellsearch.search.darts import ArchitectureWeights, check_relaxable
from cellsearch.search.final import rank_agreement
from cellsearch.search.run import run_search
from cellsearch.search.settings import ResumeError
from cellsearch.search.store import TrialStore
from cellsearch.space.genotype import GenotypeError, SearchSpace, load_genotype

OPS = ["identity", "avg_pool_3x3", "max_pool_3x3", "conv_1x1", "conv_3x3"]
SPACE = SearchSpace(ops=tuple(OPS), num_blocks=2)
CHILD = dict(cells_per_stage=1, channels=4, epochs=1, batch_size=100, accelerator="cpu", logger=None)
DATA = dict(name="digits", train_subset=300, val_subset=100)
TINY_ONESHOT = ["evaluator.batch_size=50", "evaluator.warmup_epochs=1", "evaluator.eval_batch_size=100",
                "evaluator.final_candidates=3", "evaluator.final_top_k=2"]


def evaluator(run_dir=None, **settings):
    settings = {"batch_size": 50, "eval_batch_size": 100, **settings}
    return OneShotEvaluator(CHILD, DATA, SPACE, run_dir=run_dir, **settings)


def test_phases_follow_the_schedule_and_resume_from_the_saved_supernet(tmp_path):
    ev = evaluator(tmp_path, warmup_epochs=1, phase_epochs=0.5, train_every=2, max_phases=1,
                   path_sampler="proposals")
    rng = random.Random(0)
    steps = []
    for trial in range(4):
        genotype = SPACE.sample(rng)
        result = ev.evaluate(genotype, trial_id=trial)
        assert result.ok, result.error
        assert result.metric("val_accuracy") == ev.score(genotype)  # the path's score with the weights as they are
        steps.append(result.metric("supernet_steps"))
    # 300 images / 50 = 6 steps per epoch: warm-up 6, one phase of 3 at trial 2, then no more (max_phases)
    assert steps == [6, 6, 9, 9]
    assert (tmp_path / "supernet.pt").is_file()
    resumed = evaluator(tmp_path, warmup_epochs=1, phase_epochs=0.5, train_every=2, max_phases=1,
                        path_sampler="proposals")
    genotype = SPACE.sample(rng)
    assert resumed.evaluate(genotype, trial_id=4).metric("supernet_steps") == 9  # loaded, not retrained
    assert resumed.score(genotype) == ev.score(genotype)  # the same weights
    sent = pickle.loads(pickle.dumps(resumed))  # executors may pickle evaluators; the supernet is not sent along
    assert resumed._runtime is not None and sent._runtime is None
    assert sent.score(genotype) == ev.score(genotype)  # the receiver loads the saved supernet
    with pytest.raises(ConfigError, match="other settings"):
        evaluator(tmp_path, warmup_epochs=1, phase_epochs=0.5, train_every=2, max_phases=1,
                  path_sampler="uniform").evaluate(genotype, trial_id=5)


def test_bad_settings_and_out_of_space_cells_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="evaluator.path_sampler must be one of"):
        evaluator(path_sampler="controller")
    with pytest.raises(ConfigError, match="use executor=local"):
        evaluator().check_single_device()
    with pytest.raises(GenotypeError, match="outside the supernet's space: normal cell: has 5 blocks"):
        evaluator().evaluate(load_genotype("nasnet_a"))


def test_rank_agreement():
    perfect = rank_agreement([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], top_k=2)
    assert perfect["kendall_tau"] == pytest.approx(1) and perfect["top_k_precision"] == 1
    reverse = rank_agreement([0.4, 0.3, 0.2, 0.1], [0.5, 0.6, 0.7, 0.8], top_k=2)
    assert reverse["spearman_rho"] == pytest.approx(-1) and reverse["top_k_precision"] == 0


def test_darts_discretises_to_a_genotype_of_the_space_and_refuses_concat_only():
    alphas = ArchitectureWeights(SPACE)
    with torch.no_grad():
        alphas.normal_op[0][OPS.index("conv_3x3")] = 5.0
    genotype = alphas.discretise()
    SPACE.validate(genotype)
    assert genotype.normal.blocks[0].ops[0] == "conv_3x3" and genotype.normal.blocks[0].combine == "add"
    SPACE.validate(alphas.sample(random.Random(0)))
    with pytest.raises(ConfigError, match="DARTS cannot relax this space: its blocks combine by concat only"):
        check_relaxable(SearchSpace(num_blocks=2, combines=("concat",)))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["enas", "oneshot_random", "testbed_oneshot"])
def test_weight_sharing_presets_run_then_name_the_best_cell_on_standalone_accuracy(tmp_path, experiment, compose,
                                                                                 tiny_search):
    cfg = compose(f"experiment={experiment}", *tiny_search, *TINY_ONESHOT, "evaluator.cells_per_stage=1",
                 "evaluator.channels=4", "evaluator.train_every=2", "evaluator.max_phases=1",
                 "evaluator.phase_epochs=0.5", "search.budget=4", f"run_dir={tmp_path}")
    assert cfg.data.name == "digits" and cfg.evaluator._target_.endswith("OneShotEvaluator")
    run_search(cfg)
    ranking = (tmp_path / "ranking.yaml").read_text()
    assert "kendall_tau" in ranking and "standalone_val_accuracy" in ranking
    best = load_genotype(tmp_path / "best_cell.yaml")
    assert "stand-alone val_accuracy" in best.source and "one-shot estimate" in best.source
    with TrialStore(tmp_path / "standalone.db") as store:
        rows = store.rows()
        curves = store.curves()  # a finalist trained stand-alone keeps its learning curve
    assert all(curves[r.trial_id][-1].val_accuracy == r.val_accuracy for r in rows if r.ok)
    assert len(rows) == 3 and all("oneshot_val_accuracy" in r.genotype.to_json() or r.ok for r in rows)
    assert max(r.reward for r in rows) == pytest.approx(float(best.source.split("val_accuracy ")[1].split(",")[0]),
                                                      abs=1e-4)
    model = timm.create_model("cellnet_cifar", genotype=str(tmp_path / "best_cell.yaml"), cells_per_stage=1,
                              channels=4, in_chans=1)
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    changed = compose(f"experiment={experiment}", *tiny_search, *TINY_ONESHOT, "evaluator.cells_per_stage=1",
                     "evaluator.channels=8", "search.budget=4", f"run_dir={tmp_path}")
    with pytest.raises(ResumeError, match="evaluator.channels: 4 -> 8"):
        run_search(changed)


@pytest.mark.slow
def test_darts_preset_runs_resumes_and_refuses_a_changed_setting(tmp_path, compose, tiny_search):
    args = ["experiment=darts", *tiny_search, "search.cells_per_stage=1", "search.channels=4", "search.batch_size=50",
            "search.steps_per_epoch=2", "search.final_candidates=3", "search.final_top_k=2", "search.val_batches=1",
            "search.eval_batch_size=100", f"run_dir={tmp_path}"]
    report = run_search(compose(*args, "search.budget=1"))
    assert len(report.rows) == 3 and (report.best, report.best_accuracy) in report.rows  # named on stand-alone
    assert report.best_accuracy == max(accuracy for _, accuracy in report.rows if accuracy is not None)
    assert torch.load(tmp_path / "darts_state.pt", weights_only=True)["epoch"] == 1
    report = run_search(compose(*args, "search.budget=2", "search.order=first"))  # resumes for one more epoch
    assert torch.load(tmp_path / "darts_state.pt", weights_only=True)["epoch"] == 2
    SPACE.validate(load_genotype(tmp_path / "best_cell.yaml"))
    with pytest.raises(ResumeError, match="search.order: 'first' -> 'second'"):
        run_search(compose(*args, "search.order=second"))


def test_darts_second_order_step(tmp_path, compose, tiny_search):
    args = ["experiment=darts", *tiny_search, "search.cells_per_stage=1", "search.channels=4", "search.batch_size=50",
            "search.steps_per_epoch=1", "search.order=second", "search.budget=1", "search.final_candidates=1",
            "search.final_top_k=1", "search.val_batches=1", f"run_dir={tmp_path}"]
    run_search(compose(*args))
    alphas = torch.load(tmp_path / "darts_state.pt", weights_only=True)["alphas"]
    assert all(torch.isfinite(v).all() for v in alphas.values())


def test_quick_cpu_preset_composes_as_documented(tmp_path, compose):
    cfg = compose("experiment=oneshot_quick_cpu", f"run_dir={tmp_path}")
    assert cfg.data.name == "digits" and cfg.search._target_.endswith("RegularizedEvolution")
    assert cfg.evaluator.final_candidates >= 8 and cfg.executor._target_.endswith("LocalExecutor")
    assert "concat" in cfg.space.combines and cfg.evaluator.path_sampler == "uniform"


def test_the_testbed_preset_searches_the_tables_space_with_its_child_and_the_measured_estimator(tmp_path, compose):
    from cellsearch.evaluators.table import load_table
    from cellsearch.space.spaces import space_from_settings

    cfg = compose("experiment=testbed_oneshot", f"run_dir={tmp_path}")
    table = load_table("testbed_curves")  # the truth its one-shot ranking was measured against
    assert space_from_settings(cfg.space) == table.space and cfg.data.name == table.data["name"]
    assert {k: cfg.child[k] for k in ("cells_per_stage", "channels", "epochs", "batch_size", "lr")} == \
        {k: table.child[k] for k in ("cells_per_stage", "channels", "epochs", "batch_size", "lr")}
    measured = {"warmup_epochs": 1.0, "finetune_steps": 20, "finetune_lr": 0.05, "finetune_schedule": "constant",
                "estimate": "likelihood", "val_batches": 1, "bn_batches": 2, "path_sampler": "uniform"}
    assert {k: cfg.evaluator[k] for k in measured} == measured  # bench_oneshot's "the evaluator's defaults"
    assert cfg.search._target_.endswith("RandomSearch") and cfg.executor._target_.endswith("LocalExecutor")


def test_a_path_with_nan_logits_is_unscored_in_one_line_and_others_still_score():
    ev = evaluator(warmup_epochs=1)
    rng = random.Random(1)
    uses_conv = next(g for g in (SPACE.sample(rng) for _ in range(200))
                     if "conv_3x3" in g.normal.blocks[0].ops and "conv_3x3" not in g.reduce.blocks[0].ops)
    clean = next(g for g in (SPACE.sample(rng) for _ in range(500))
                 if all("conv_3x3" not in b.ops for c in (g.normal, g.reduce) for b in c.blocks))
    ev.train_until(1)
    with torch.no_grad():  # the normal cells' conv_3x3 of block 0 diverged
        for cell in ev._runtime["trainer"].supernet.cells:
            for position in cell.ops[0]:
                for key, module in position.items():
                    if key.startswith("conv_3x3"):
                        for p in module.parameters():
                            p.fill_(float("nan"))
    bad = ev.evaluate(uses_conv, trial_id=1)
    assert not bad.ok and "NaN" in bad.error and "\n" not in bad.error
    assert bad.metric("supernet_steps") == 6  # still marked as the supernet's (un)estimate
    good = ev.evaluate(clean, trial_id=2)
    assert good.ok and 0 <= good.metric("val_accuracy") <= 1


def test_one_shot_lines_say_estimate_and_unscored_not_reward_and_failed(tmp_path):
    from cellsearch.search.report import Progress, summary_table
    from cellsearch.search.store import TrialStore

    genotype = SPACE.sample(random.Random(0))
    with TrialStore(tmp_path / "trials.db") as store:
        scored = store.add(0, genotype, EvalResult("ok", {"val_accuracy": 0.21, "supernet_steps": 6.0}, 0.1), 0.21)
        unscored = store.add(1, genotype, failed_result("UnscoredPath: NaN logits", 0.1, supernet_steps=6.0), None)
        trained = store.add(2, genotype, EvalResult("ok", {"val_accuracy": 0.5}, 3.0), 0.5)
    progress = Progress(budget=3, num_done=0, start=0.0)
    line = progress.record(scored, scored)
    assert line.startswith("cell 1/3") and "one-shot estimate 0.2100" in line and "reward" not in line
    line = progress.record(unscored, scored)
    assert "unscored (UnscoredPath: NaN logits)" in line and "FAILED" not in line
    line = progress.record(trained, trained)
    assert line.startswith("child 3/3") and "reward 0.5000" in line  # a trained child reads as before
    assert summary_table([scored]).split()[:4] == ["rank", "trial", "estimate", "est_acc"]


def test_a_path_is_fine_tuned_on_a_copy_that_is_put_back():
    from cellsearch.evaluators.path_tuning import finetuned_path
    from cellsearch.space.supernet import SuperNet

    torch.manual_seed(0)
    supernet = SuperNet(SPACE, cells_per_stage=1, channels=4, num_classes=10, in_chans=1)
    genotype = SPACE.sample(random.Random(0))
    batches = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(2)]
    before = {name: p.detach().clone() for name, p in supernet.named_parameters()}
    with finetuned_path(supernet, genotype, batches, lr=0.1) as tuned:
        changed = {name for name, p in tuned.named_parameters() if not torch.equal(p, before[name])}
    assert changed and "stem.0.weight" in changed  # the path moved
    assert len(changed) < len(before) // 2  # ops off the path did not
    assert all(torch.equal(p, before[name]) for name, p in supernet.named_parameters())  # and all is put back
    assert all(p.grad is None for p in supernet.parameters())


def test_a_cosine_fine_tune_halves_the_rate_of_the_second_of_two_steps():
    from cellsearch.evaluators.oneshot import OneShotConfig
    from cellsearch.evaluators.path_tuning import finetuned_path
    from cellsearch.space.supernet import SuperNet

    torch.manual_seed(0)
    supernet = SuperNet(SPACE, cells_per_stage=1, channels=4, num_classes=10, in_chans=1)
    genotype = SPACE.sample(random.Random(0))
    first, second = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(2)]
    plain = dict(momentum=0.0, weight_decay=0.0, grad_clip=0.0)  # no state carried from one step to the next
    with finetuned_path(supernet, genotype, [first, second], lr=0.1, schedule="cosine", **plain) as tuned:
        cosine = [p.detach().clone() for p in tuned.parameters()]
    with finetuned_path(supernet, genotype, [first], lr=0.1, **plain) as once:  # step 0 of 2: the full rate
        with finetuned_path(once, genotype, [second], lr=0.05, **plain) as twice:  # step 1 of 2: (1 + cos(pi/2))/2
            by_hand = [p.detach().clone() for p in twice.parameters()]
    for a, b in zip(cosine, by_hand):
        torch.testing.assert_close(a, b)
    with finetuned_path(supernet, genotype, [first, second], lr=0.1, **plain) as tuned:
        assert any(not torch.equal(p, c) for p, c in zip(tuned.parameters(), cosine))  # a constant rate differs
    with pytest.raises(ConfigError, match="finetune_schedule must be one of"):
        OneShotConfig(finetune_schedule="linear")  # refused in one line


def test_a_supernet_saved_before_path_fine_tuning_existed_resumes_as_it_scored(tmp_path):
    old = dict(warmup_epochs=0.5, finetune_steps=0, finetune_lr=0.02, estimate="accuracy",
               finetune_schedule="constant")  # as ADDED_OPTION_SETTINGS reads an old run
    ev = evaluator(tmp_path, **old)
    genotype = SPACE.sample(random.Random(0))
    ev.train_until(1)
    state = torch.load(tmp_path / "supernet.pt", weights_only=True)
    for key in ("finetune_steps", "finetune_lr", "estimate", "finetune_schedule"):  # as a release before them wrote it
        del state["settings"]["config"][key]
    torch.save(state, tmp_path / "supernet.pt")
    assert evaluator(tmp_path, **old).score(genotype) == ev.score(genotype)
    with pytest.raises(ConfigError, match="other settings"):
        evaluator(tmp_path, **{**old, "finetune_steps": 2}).score(genotype)


def load_bench_oneshot(monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_oneshot.py"
    spec = importlib.util.spec_from_file_location("bench_oneshot", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_oneshot", bench)  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def test_the_one_shot_rows_of_the_estimator_table(monkeypatch):
    bench = load_bench_oneshot(monkeypatch)
    rng = random.Random(0)
    cells = [SPACE.sample(rng) for _ in range(6)]
    truth = [0.1 * i for i in range(6)]
    recipes = [bench.Recipe("1x", 1), bench.Recipe("1x + fine-tune", 1, {"finetune_steps": 1})]
    rows = bench.oneshot_rows(cells, truth, {**CHILD, "epochs": 1}, DATA, SPACE, seeds=(0,), recipes=recipes,
                              resamples=20, child_seconds=1.0)
    assert [r["estimator"] for r in rows] == ["one-shot 1x", "one-shot 1x + decision smoothing", "one-shot 1x + fine-tune",
                                              "one-shot 1x + fine-tune + decision smoothing"]
    for row in rows:
        assert -1 <= row["kendall_tau"].value <= 1 and row["kendall_tau"].low <= row["kendall_tau"].high
        assert len(row["estimates"]) == 6 and row["cpu_seconds"] > 0 and row["children"] == row["cpu_seconds"]
    assert rows[0]["estimates"] != rows[2]["estimates"]  # the fine-tune changed the scores
    same = cells[:3] * 2  # a cell's smoothed estimate pools the scores of every cell with its choices
    smoothed = bench.decision_smoothed([0.1, 0.2, 0.3, 0.3, 0.4, 0.5], same, SPACE, penalty=1e-6)
    assert smoothed == pytest.approx([0.2, 0.3, 0.4] * 2, abs=1e-3)


def test_an_ensemble_recipe_scores_a_cell_by_the_geometric_mean_of_its_supernets(monkeypatch):
    bench = load_bench_oneshot(monkeypatch)
    cells = [SPACE.sample(random.Random(i)) for i in range(3)]
    child = {**CHILD, "epochs": 1}
    one = bench.Recipe("1x", 1, {"estimate": "likelihood", "val_batches": 1, "eval_batch_size": 100})
    pair = bench.Recipe("2 supernets", 1, one.settings, supernets=2)
    members = [bench.oneshot_estimates(cells, child, DATA, SPACE, one, seed)[0] for seed in (2, 3)]
    ensemble, seconds = bench.oneshot_estimates(cells, child, DATA, SPACE, pair, seed=1)  # supernets 2 and 3
    assert ensemble == pytest.approx([(a * b) ** 0.5 for a, b in zip(*members)]) and seconds > 0
    assert members[0] != members[1]  # two supernets, two opinions


def test_the_short_training_rows_read_each_seeds_early_accuracy_and_its_cost_from_the_curves(monkeypatch):
    from cellsearch.evaluators.table import TableRow

    bench = load_bench_oneshot(monkeypatch)
    rows = [(None, TableRow(actions=(i,), val_accuracy=(0.5 + 0.1 * i, 0.6 + 0.1 * i), seeds=(0, 1), params=1,
                            mult_adds=1, train_seconds=2.0,
                            curves=((0.1 * i, 0.2 * i), (0.3 - 0.1 * i, 0.2 * i)), curve_cpu_seconds=((1, 2), (1, 3))))
            for i in range(4)]
    out = bench.short_training_rows(rows, epochs=(1, 2), resamples=20, child_seconds=2.0)
    assert [(r["estimator"].split(",")[1], r["seed"]) for r in out] == [
        (" first 1 epoch(s) of the child's training run", 0), (" first 1 epoch(s) of the child's training run", 1),
        (" first 2 epoch(s) of the child's training run", 0), (" first 2 epoch(s) of the child's training run", 1)]
    assert out[0]["estimates"] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert out[0]["kendall_tau"].value == pytest.approx(1)
    assert out[1]["kendall_tau"].value == pytest.approx(-1)  # seed 1's first epoch ranks the cells backwards
    assert out[3]["cpu_seconds"] == 12 and out[3]["children"] == 6  # 4 cells x 3 CPU s, in children of 2 s


def test_the_likelihood_estimate_is_exp_of_minus_the_paths_cross_entropy():
    from cellsearch.evaluators.oneshot import score_path
    from cellsearch.space.supernet import SuperNet

    torch.manual_seed(0)
    supernet = SuperNet(SPACE, cells_per_stage=1, channels=4, num_classes=10, in_chans=1)
    genotype = SPACE.sample(random.Random(0))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    with torch.no_grad():
        expected = torch.exp(-torch.nn.functional.cross_entropy(supernet(x, genotype), y)).item()
    assert score_path(supernet, genotype, [], [(x, y)], "likelihood") == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="evaluator.estimate must be one of"):
        evaluator(estimate="loss")
