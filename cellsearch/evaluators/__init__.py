"""What a cell is worth: evaluators turn a genotype into named metrics (stand-alone training first)."""
from cellsearch.evaluators.base import STANDARD_METRICS, EvalResult, Evaluator, failed_result
from cellsearch.evaluators.oneshot import OneShotEvaluator
from cellsearch.evaluators.standalone import TrainEvaluator

__all__ = ["STANDARD_METRICS", "EvalResult", "Evaluator", "TrainEvaluator", "failed_result", "OneShotEvaluator"]
