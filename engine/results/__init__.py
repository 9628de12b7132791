"""The results floor: what a finished run leaves and the statistics computed
from it, with no TensorFlow in it.

``runs`` is the run folder's format (its files, statuses and the one
"finished" rule; reading and writing its history, scores and metrics): the
training layer writes through it, and the sweep, the trial processes, the
dashboard, the report and the bench read through it, so no reader can drift
from the writer. ``metrics`` gathers the clinical metrics, pure NumPy/SciPy:
``rates`` (point metrics of the positive class), ``intervals``,
``calibration``, ``checks`` (the arguments every metric checks) and the
summaries a run's metrics.json carries. Imports only the base modules, so
``engine report DIR`` reads a folder of finished trials without importing
TensorFlow.
"""
