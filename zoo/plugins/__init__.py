"""The plugin registry: architectures and checkpoint names come from pluggy plugins found through the
``zoo`` entry point group (BERT and the transformers fallback are registered that way too).

- :mod:`~zoo.plugins.hookspecs`: the hooks a plugin implements;
- :mod:`~zoo.plugins.spec`: the records a plugin returns (architectures, checkpoint rows);
- :mod:`~zoo.plugins.registry`: loading the plugins, isolating a broken one, answering lookups.
"""
