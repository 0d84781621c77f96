"""cellsearch's front door in a clone of the repository: ``python train.py ...`` is the ``cellsearch``
command (search, retrain, export; ``--help`` lists the settings) with the configuration in the conf/
beside this file, installed or not. The logic lives in :mod:`cellsearch.cli`.

    python train.py experiment=quick_cpu     # the same as: cellsearch experiment=quick_cpu
"""
from pathlib import Path

from cellsearch.cli import main

if __name__ == "__main__":
    main(config_path=str(Path(__file__).resolve().parent / "conf"))
