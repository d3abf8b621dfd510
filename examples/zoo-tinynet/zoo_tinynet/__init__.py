"""An example zoo plugin: TinyNet, a small residual MLP over token embeddings that transformers does
not have. It shows the whole contract of an architecture plugin:

- a config class with ``from_dict`` / ``to_dict`` and a ``model_type``;
- model classes (heads) built as ``cls(config)`` that keep ``.config``;
- one ``@zoo.hookimpl`` that registers them, named by ``"module:Class"`` strings so that
  ``zoo plugins`` lists this plugin without importing torch.
"""

import zoo


@zoo.hookimpl
def zoo_register_architectures(register):
    register(
        zoo.Architecture(
            model_type="tinynet",
            config_class="zoo_tinynet.modeling:TinyNetConfig",
            heads={
                "TinyNetModel": "zoo_tinynet.modeling:TinyNetModel",
                "TinyNetForClassification": "zoo_tinynet.modeling:TinyNetForClassification",
            },
            tasks={"base": "TinyNetModel", "text-classification": "TinyNetForClassification"},
            description="TinyNet: residual MLP blocks over token embeddings (example plugin)",
        )
    )
