"""One module of checks per notebook: ``from autograder.checks import utils as check`` in ``01_utils``."""
