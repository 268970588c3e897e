"""deepdive: why is my image classifier wrong?

`import deepdive` is cheap: heavy pieces (captum, cleanlab, fastapi) load only when used.
"""
__version__ = "0.1.0"

__all__ = ["load_dataset", "log_evaluation", "init", "indexed", "open_run", "__version__"]


def __getattr__(name):
    if name == "load_dataset":
        from deepdive.data import load_dataset

        return load_dataset
    if name in ("log_evaluation", "init", "indexed"):
        from deepdive.analysis import api

        return getattr(api, name)
    if name == "open_run":
        from deepdive.analysis.reader import open_run

        return open_run
    raise AttributeError(f"module 'deepdive' has no attribute {name!r}")
