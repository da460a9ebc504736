"""Check functions that compare a student's notebook code with the ``hsd3_learn`` reference.

The checks and the ``python -m autograder`` command are added with the course machinery; this package is
installed already so that imports and packaging are stable from the start.
"""
