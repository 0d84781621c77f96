"""Objectives: the MnasNet constrained reward, the Pareto rank reward, and their checks."""
import pytest

from cellsearch.validation import ConfigError
from cellsearch.evaluators import EvalResult
from cellsearch.search.objectives import (AccuracyObjective, ConstrainedObjective, ParetoObjective, pareto_front,
                                          pareto_ranks)


def result(accuracy, params=1000, status="ok"):
    return EvalResult(status, {"val_accuracy": accuracy, "params": params, "mult_adds": 10 * params}, 1.0)


def test_constrained_reward_is_mnasnet_s():
    objective = ConstrainedObjective(metric="params", target=20000)
    assert objective.reward(result(0.8, 20000)) == pytest.approx(0.8)  # at the target: the accuracy
    assert objective.reward(result(0.8, 40000)) == pytest.approx(0.8 * 2 ** -0.07)  # ~5 % less
    assert objective.reward(result(0.8, 10000)) == pytest.approx(0.8 * 0.5 ** -0.07)  # ~5 % more
    assert objective.reward(result(0.8, status="failed")) is None
    assert objective.needs == ("val_accuracy", "params")


def test_pareto_ranks_peel_fronts_and_the_reward_is_fixed_when_recorded():
    points = [(0.9, 100), (0.8, 50), (0.85, 120), (0.7, 200), (0.9, 100)]
    assert pareto_ranks(points) == [0, 0, 1, 2, 0]
    assert pareto_front(points) == [1, 0, 4]
    objective = ParetoObjective(metric="params")
    history = [{"val_accuracy": 0.9, "params": 100}]
    assert objective.reward(result(0.95, 50), history) == 1.0  # dominates everything: on the front
    assert objective.reward(result(0.85, 120), history) == 0.5  # dominated by the one front trial: rank 1
    assert objective.reward(result(0.95, 500), history) == 1.0  # better accuracy, more params: both on the front


def test_bad_objective_settings_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"choose one of \['params', 'mult_adds', 'latency_ms'\]"):
        ConstrainedObjective(metric="flops", target=1)
    with pytest.raises(ConfigError, match="target must be a positive"):
        ConstrainedObjective(metric="params", target=0)
    with pytest.raises(ConfigError, match="evaluator.latency=true"):
        ParetoObjective(metric="latency_ms").check(("val_accuracy", "params", "mult_adds"))
    AccuracyObjective().check(("val_accuracy",))
    with pytest.raises(ConfigError, match=r"objective=accuracy needs the metric\(s\) \['val_accuracy'\]"):
        AccuracyObjective().check(("params",))


def test_latency_is_measured_on_the_training_device_and_published_cells_are_sized_alike():
    from cellsearch.data import as_data_config, describe_dataset
    from cellsearch.evaluators import TrainEvaluator
    from cellsearch.evaluators.child import ChildConfig
    from cellsearch.evaluators.latency import child_latency_ms, device_for, device_name
    from cellsearch.search.front import PUBLISHED_CELLS, published_costs
    from cellsearch.space.genotype import load_genotype

    child, data = ChildConfig(cells_per_stage=1, channels=4, accelerator="cpu"), as_data_config({"name": "digits"})
    evaluator = TrainEvaluator(child, data, latency=True)
    assert "latency_ms" in evaluator.metrics and "latency_ms" not in TrainEvaluator(child, data).metrics
    assert device_for("cpu").type == "cpu" and evaluator.device_name().startswith("cpu: ")
    info = describe_dataset(data)
    latency = child_latency_ms(load_genotype("nasnet_a"), 1, 4, info.num_classes, info.input_size, "cpu")
    assert 0 < latency < 1000
    params = published_costs("params", child, info)
    assert list(params) == list(PUBLISHED_CELLS) and all(v > 1000 for v in params.values())
    assert published_costs("mult_adds", child, info)["nasnet_a"] > params["nasnet_a"]
    with pytest.raises(ConfigError, match="latency must be true or false"):
        TrainEvaluator(child, data, latency="yes")
    assert device_name("cpu") == evaluator.device_name()  # the line the latency column is labelled with
