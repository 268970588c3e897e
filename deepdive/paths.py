"""Where deepdive keeps things: the data cache, the default workspace and the run folder's resume file."""
import os
from pathlib import Path

DEFAULT_WORKSPACE = "runs"
# In a run folder while the run is unfinished: what `deepdive resume` continues from (written by the recipe).
TRAIN_STATE = "train_state.pt"
# In a finished run's folder: each training image's answer at every epoch (deepdive.analysis.dynamics).
DYNAMICS = "dynamics.npz"


def deepdive_home() -> Path:
    """Cache root: $DEEPDIVE_HOME, else ~/.cache/deepdive."""
    return Path(os.environ.get("DEEPDIVE_HOME") or Path.home() / ".cache" / "deepdive")
