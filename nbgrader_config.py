"""nbgrader configuration of the course: `solutions/` is the source, `course/` the release, one assignment per notebook.

Grading folders (submitted/, autograded/, feedback/) and gradebook.db are created here and ignored by git.
"""

import os

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "hsd3-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "course"
# The jupytext sources (*.py) hold the solutions: they must never be copied into the release or autograded folders.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.py"]

# Per-cell time limit. The longest solved cell (compiling a model with torch.compile) takes well under a minute on a
# laptop CPU; an infinite loop costs at most this long and then only that cell fails.
c.Execute.timeout = 180
c.Execute.kernel_name = "python3"

# Deleted grade cells come back (scored normally) instead of leaving the submission stuck.
c.OverwriteCells.add_missing_cells = True

# C-level library noise on stderr would zero a test cell (nbgrader scores any stderr output 0). The checks silence
# stderr while they run; this catches known messages printed outside them.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"(NNPACK|Failed to initialize NumPy|TracerWarning|jit\.trace|oneDNN|MESA|libEGL).*"

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Offline course: release/collect through files, not a shared exchange folder.
c.Exchange.root = os.path.join(c.CourseDirectory.root, ".exchange")
