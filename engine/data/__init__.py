"""The data layer: from an image folder to batches on the device.

``layouts`` finds images and classes in a source folder (and the recipes of
known sources), ``splits`` makes leak-free splits and subsets, ``images``
decodes and converts one file safely, ``records`` writes TFRecord shards and
the manifest, ``manifest`` reads them back (and holds the rule a batch size
meets against a split), ``pipeline`` is the tf.data input,
``augment`` the paper's augmentation, ``drawing`` one procedural X-ray,
``synthetic`` a data set of them and ``embedded`` the synthetic set built once
into the cache folder.

Imports only the base modules (config, errors, io, machine, progress).
"""
