"""The study layer: the paper's questions asked as sweeps of training runs.

``sweep`` turns a study into trials and runs them, ``report`` summarises,
ranks and plots what they wrote, ``dashboard`` is the live view, ``lrfind``
the learning-rate range test and ``launch`` runs a sweep as several shard
processes. Uses training only through ``engine.training``'s public names.
"""
