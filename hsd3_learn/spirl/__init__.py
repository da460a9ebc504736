"""SPiRL (Pertsch et al., CoRL 2020) on the Walker, built on HSD-3's pre-trained skills: offline skills and a
skill prior learned from task-agnostic walking data, then reinforcement learning in the skill space.

Modules (import the one you need; nothing is imported here, so ``import hsd3_learn.spirl`` stays cheap):

- :mod:`hsd3_learn.spirl.data`: the offline dataset: rolling out the HSD-3 skills, shards, windows of H steps;
- :mod:`hsd3_learn.spirl.collect`: ``python -m hsd3_learn.spirl.collect``, writes the dataset of a run;
- :mod:`hsd3_learn.spirl.models`: the skill encoder, decoders and skill prior;
- :mod:`hsd3_learn.spirl.train_prior`: offline training of the skill model and prior;
- :mod:`hsd3_learn.spirl.agents`: SPiRL, SPiRL-cl and the no-prior baseline (SAC in the skill space);
- :mod:`hsd3_learn.spirl.skill_critic`: Skill-Critic, which also fine-tunes the low level;
- :mod:`hsd3_learn.spirl.train`: reinforcement learning on the downstream tasks.
"""
