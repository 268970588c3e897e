"""Where deepdive keeps things: the data cache and the default workspace."""
import os
from pathlib import Path

DEFAULT_WORKSPACE = "runs"


def deepdive_home() -> Path:
    """Cache root: $DEEPDIVE_HOME, else ~/.cache/deepdive."""
    return Path(os.environ.get("DEEPDIVE_HOME") or Path.home() / ".cache" / "deepdive")
