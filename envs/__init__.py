"""The MuJoCo walker task suite (robots and tasks; the role ``bisk`` plays for the original HSD-3).

The robots and tasks are added by the environment part of the course; this package is installed already so
that imports and packaging are stable from the start.
"""
