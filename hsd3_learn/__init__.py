"""hsd3_learn: a modern reference implementation of HSD-3 and SPiRL.

Modules follow the course order: ``utils``, ``spaces``, ``models.bandits``, ``models.blocks``,
``models.traced``, then the agents, HSD-3's environment code, ``replaybuffer``, ``hashcount`` and ``render``.
"""

__version__ = "0.1.0"
