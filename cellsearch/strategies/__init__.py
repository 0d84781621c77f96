"""Search strategies: one ask/tell interface, one file per strategy."""
