"""engine: a fast, trustworthy study of Adam's learning rate and batch size for
InceptionV3 on chest X-rays, runnable on any image folder.

The package root stays import-light (no TensorFlow) so worker processes and the
command line start fast; each concept lives in its own module.
"""

__version__ = "0.1.0"
