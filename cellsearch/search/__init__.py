"""Running a search: the loop, the trial store, the executors, export of the best cells."""
