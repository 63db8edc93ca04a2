"""Where the benchmarks read their datasets: one setting, no absolute path.

`RARELABEL_DATA_DIR` names the folder that holds `dbpedia14/`, `20newsgroups/`, ... (the
layout of the shared data folder); by default it is `../shared/data` beside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"


def data_dir() -> Path:
    """The datasets' folder: $RARELABEL_DATA_DIR, else <repo>/../shared/data."""
    return Path(os.environ.get("RARELABEL_DATA_DIR") or DEFAULT_DATA_DIR)


def data_file(*parts: str) -> Path:
    """A file under the datasets' folder, e.g. data_file("dbpedia14", "dbpedia14.csv.gz")."""
    return data_dir().joinpath(*parts)


DBPEDIA14 = data_file("dbpedia14", "dbpedia14.csv.gz")
