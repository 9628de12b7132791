"""The bench layer (``engine bench``): how fast the engine trains, beside the
paper's stack, on this machine.

``protocol`` is how one measurement is taken and timed, ``engine_stack``
the engine's measurements (through ``engine.training``'s public names),
``paper_stack`` the paper's tf_keras stack, ``flops`` model FLOPs and device
peaks, ``runner`` the whole run and ``report`` what it writes.
"""
