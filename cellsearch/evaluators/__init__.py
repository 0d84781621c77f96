"""What a cell is worth: evaluators that turn a genotype into metrics (stand-alone training first)."""
