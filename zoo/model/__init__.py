"""The model half: a checkpoint folder and the model built from it, with no store and no network.

- :mod:`~zoo.model.config`: ``config.json`` read, checked and turned into a transformers config;
- :mod:`~zoo.model.checkpoint`: the one check of whether a folder is a complete, valid checkpoint;
- :mod:`~zoo.model.weights`: weight files (safetensors, legacy ``.bin`` read without unpickling), shards;
- :mod:`~zoo.model.conversion`: key renames of older checkpoint layouts;
- :mod:`~zoo.model.compat`: the ``transformers_version`` a checkpoint was saved with, and advice for it;
- :mod:`~zoo.model.modeling`: building a model from a config and loading weights into it (torch);
- :mod:`~zoo.model.describe`: what ``zoo info`` shows, from the config and the headers only (no torch).

Nothing here imports the store (:mod:`zoo.store`) or the daemon: a load of a path needs neither.
"""
