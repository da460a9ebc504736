"""``python -m autograder {check,diff,build}``: see :mod:`autograder.cli`."""

from autograder.cli import main

raise SystemExit(main())
