"""labkit: a local lab of real Postgres / MariaDB / Redis clusters for repoint's tests.

    import sys; sys.path.insert(0, "<repo>/scripts")
    from labkit import Lab
"""

from .lab import ALL_ENGINES, Lab, Node, default_dir
from .procs import LabError

__all__ = ["Lab", "Node", "LabError", "ALL_ENGINES", "default_dir"]
