"""`python -m deepdive` == the `deepdive` console script."""
import sys

from deepdive.cli import main

sys.exit(main())
