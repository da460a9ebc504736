"""The tasks of the walker benchmark; each module holds one task class (see envs/__init__.py for the list)."""
