"""What a cell is worth: evaluators turn a genotype into named metrics (stand-alone training first)."""
from cellsearch._lazy import lazy_attributes

# Imported when first used: importing ChildConfig (the ``child`` schema that the ``cellsearch`` command
# composes) must not load torch and Lightning.
_SUBMODULES = {
    "base": ["STANDARD_METRICS", "EpochPoint", "EvalResult", "Evaluator", "failed_result"],
    "landscape": ["LandscapeEvaluator"],
    "oneshot": ["OneShotEvaluator"],
    "standalone": ["TrainEvaluator"],
}
__getattr__, __dir__ = lazy_attributes(__name__, _SUBMODULES)
__all__ = sorted(name for names in _SUBMODULES.values() for name in names)
