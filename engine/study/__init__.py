"""The study layer: the paper's questions asked as sweeps of training runs.

``compare`` runs a sweep whole (``engine compare``, ``engine resume``,
``engine report``): ``sweep`` turns a study into trials, stores it in
sweep.json and runs a runner's trials, ``launch`` starts trial processes
(``worker``, which read the sweep from sweep.json) and job-array runners,
``dashboard`` is the live view and ``report`` (with ``paper``, ``claims``,
``curves``, ``axes``, ``stats``, ``clinical`` and ``plots``) summarises,
ranks and plots what the trials wrote. ``inputs`` finds (or builds) the
records every command trains on, ``lrfind`` is the learning-rate range test
and ``show`` what the commands print. Uses training only through ``engine.training``'s
public names.
"""
