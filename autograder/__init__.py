"""Check functions that compare a student's notebook code with the ``hsd3_learn`` reference.

- ``autograder.core``: the comparison engine (seeded cases, tolerances, precise failure messages, quiet stderr).
- ``autograder.checks.<topic>``: the checks each notebook calls right after an exercise (and in hidden tests).
- ``python -m autograder check NOTEBOOK``: run a notebook the way nbgrader does and print a table of grades.
- ``python -m autograder diff NOTEBOOK``: your cells next to the solution's.
- ``python -m autograder build``: rebuild ``solutions/*.ipynb`` and ``course/`` from the sources (``make notebooks``).
"""
