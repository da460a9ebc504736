"""Command-line entry point of HSD-3's skill pre-training (hucc's ``pretrain.py``), configured with Hydra.

    python -m hsd3_learn.pretrain -cn walker_pretrain profile=laptop
    python -m hsd3_learn.pretrain -cn walker_pretrain profile=tiny seed=1

``-cn`` names a ``*_pretrain`` experiment in ``hsd3_learn/config`` (``walker_pretrain``, ``humanoid_pretrain``);
``profile`` scales it (``tiny``, ``laptop``, ``paper``, the default). The run directory is the current directory:
running the same command again there resumes. The run writes ``checkpoint-lo.pt`` and ``checkpoint-lo_abs.json``
at every evaluation; give the former to HSD-3 as ``lo.init_from``::

    python -m hsd3_learn.train -cn walker_hsd3 lo.init_from=/path/to/checkpoint-lo.pt env.task=Hurdles

What a run does and writes is described in :mod:`hsd3_learn.pretraining`; bad input fails with one line before
training starts, as in :mod:`hsd3_learn.train`.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from hsd3_learn.train import DEFAULT_PRETRAIN_CONFIG, check_command_line, one_line_errors

__all__ = ["main"]


@hydra.main(config_path="config", config_name=DEFAULT_PRETRAIN_CONFIG, version_base="1.3")
def run(cfg: DictConfig) -> None:
    """One pre-training run in the current directory: prepare (one-line errors), then train."""
    from hsd3_learn.pretraining import prepare_pretraining, pretrain

    with one_line_errors("hsd3_learn.pretrain"):
        setup = prepare_pretraining(cfg)
    pretrain(setup)


def main() -> None:
    """``python -m hsd3_learn.pretrain``: check the command line, then hand it to Hydra."""
    check_command_line(sys.argv[1:], pretraining=True)
    run()


if __name__ == "__main__":
    main()
