"""zoo's built-in transformers plugin: a fallback for every ``model_type`` transformers knows.

Registered through the ``zoo`` entry-point group exactly as a third-party plugin is, so
``ZOO_DISABLE_PLUGINS=transformers`` turns it off. It registers no architecture up front: it answers
``zoo_fallback_architecture`` for a ``model_type`` that no plugin registered (BERT stays the hand-written
``bert`` plugin's), from the installed transformers' own tables: the config class from ``CONFIG_MAPPING_NAMES``,
the heads and their task names from the auto-model mappings (``MODEL_MAPPING_NAMES`` is ``base``,
``MODEL_FOR_MASKED_LM_MAPPING_NAMES`` is ``fill-mask``, ...). transformers is imported inside the hook only,
so ``import zoo`` and ``zoo plugins`` never import it. Its answer is marked ``trylast``: any other fallback
that answers for a type wins over it.

The checkpoint names people type for the canonical models that moved to organisations on the hub
(``roberta-base`` -> ``FacebookAI/roberta-base``) are a data table, like BERT's.
"""

from dataclasses import dataclass

import zoo

# Task name -> transformers' auto mappings that give its head, first found wins. One row per task; a
# mapping the installed transformers lacks is skipped. Every class found becomes a head; "base" is the default.
TASKS = (
    ("base", ("MODEL_MAPPING_NAMES",)),
    ("feature-extraction", ("MODEL_MAPPING_NAMES",)),
    ("fill-mask", ("MODEL_FOR_MASKED_LM_MAPPING_NAMES",)),
    ("text-generation", ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",)),
    ("text2text-generation", ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",)),
    ("text-classification", ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",)),
    ("token-classification", ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",)),
    ("question-answering", ("MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",)),
    ("multiple-choice", ("MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",)),
    ("next-sentence-prediction", ("MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING_NAMES",)),
    ("pretraining", ("MODEL_FOR_PRETRAINING_MAPPING_NAMES",)),
    ("text-encoding", ("MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES",)),
    ("image-classification", ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",)),
    ("image-feature-extraction", ("MODEL_FOR_IMAGE_MAPPING_NAMES",)),
    ("zero-shot-image-classification", ("MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",)),
    ("masked-image-modeling", ("MODEL_FOR_MASKED_IMAGE_MODELING_MAPPING_NAMES",)),
    ("object-detection", ("MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",)),
    ("zero-shot-object-detection", ("MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES",)),
    ("image-segmentation", ("MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES",)),
    ("semantic-segmentation", ("MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",)),
    ("instance-segmentation", ("MODEL_FOR_INSTANCE_SEGMENTATION_MAPPING_NAMES",)),
    ("universal-segmentation", ("MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES",)),
    ("depth-estimation", ("MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",)),
    ("keypoint-detection", ("MODEL_FOR_KEYPOINT_DETECTION_MAPPING_NAMES",)),
    ("mask-generation", ("MODEL_FOR_MASK_GENERATION_MAPPING_NAMES",)),
    ("image-to-image", ("MODEL_FOR_IMAGE_TO_IMAGE_MAPPING_NAMES",)),
    ("image-text-to-text", ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",)),
    ("multimodal-lm", ("MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",)),
    ("visual-question-answering", ("MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES",)),
    ("document-question-answering", ("MODEL_FOR_DOCUMENT_QUESTION_ANSWERING_MAPPING_NAMES",)),
    ("table-question-answering", ("MODEL_FOR_TABLE_QUESTION_ANSWERING_MAPPING_NAMES",)),
    ("video-classification", ("MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES",)),
    ("audio-classification", ("MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",)),
    ("audio-frame-classification", ("MODEL_FOR_AUDIO_FRAME_CLASSIFICATION_MAPPING_NAMES",)),
    ("audio-xvector", ("MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES",)),
    ("automatic-speech-recognition", ("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "MODEL_FOR_CTC_MAPPING_NAMES")),
    ("ctc", ("MODEL_FOR_CTC_MAPPING_NAMES",)),
    ("text-to-audio", ("MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES", "MODEL_FOR_TEXT_TO_SPECTROGRAM_MAPPING_NAMES")),
    ("time-series-prediction", ("MODEL_FOR_TIME_SERIES_PREDICTION_MAPPING_NAMES",)),
    ("time-series-classification", ("MODEL_FOR_TIME_SERIES_CLASSIFICATION_MAPPING_NAMES",)),
    ("time-series-regression", ("MODEL_FOR_TIME_SERIES_REGRESSION_MAPPING_NAMES",)),
    ("backbone", ("MODEL_FOR_BACKBONE_MAPPING_NAMES",)),
)

# Body weights a checkpoint may lack (initialised with a warning, as transformers does): a pooler, which
# masked-LM and causal-LM checkpoints (roberta-base's own head) do not have.
OPTIONAL_WEIGHTS = (r"(^|\.)pooler\.",)

# Where zoo's fast path (build on the meta device, map the weights) is not proven to give what
# transformers' from_pretrained gives, the class loads through from_pretrained instead (local files only,
# no remote code), and zoo info says why. model_type (or "model_type:ClassName") -> the reason.
# tests/test_architectures.py proves the fast path for the families it lists; a sweep of every model_type of
# transformers 5.24 with a tiny config found these, whose own save_pretrained output it does not read back.
TRANSFORMERS_LOADING = {
    "sam3_video": "save_pretrained writes its tracker under keys (tracker_model.tracker_model.*) that only "
                  "transformers' scoped conversion mapping reads back",
}

# Named checkpoints: name, hub repository, model_type, aliases. The canonical short names that moved to
# organisations on the hub. Adding one is a one-line edit.
CHECKPOINTS = (
    ("roberta-base", "FacebookAI/roberta-base", "roberta", ()),
    ("roberta-large", "FacebookAI/roberta-large", "roberta", ()),
    ("roberta-large-mnli", "FacebookAI/roberta-large-mnli", "roberta", ()),
    ("distilroberta-base", "distilbert/distilroberta-base", "roberta", ()),
    ("xlm-roberta-base", "FacebookAI/xlm-roberta-base", "xlm-roberta", ()),
    ("xlm-roberta-large", "FacebookAI/xlm-roberta-large", "xlm-roberta", ()),
    ("gpt2", "openai-community/gpt2", "gpt2", ()),
    ("gpt2-medium", "openai-community/gpt2-medium", "gpt2", ()),
    ("gpt2-large", "openai-community/gpt2-large", "gpt2", ()),
    ("gpt2-xl", "openai-community/gpt2-xl", "gpt2", ()),
    ("openai-gpt", "openai-community/openai-gpt", "openai-gpt", ()),
    ("distilgpt2", "distilbert/distilgpt2", "gpt2", ()),
    ("distilbert-base-uncased", "distilbert/distilbert-base-uncased", "distilbert", ()),
    ("distilbert-base-cased", "distilbert/distilbert-base-cased", "distilbert", ()),
    ("distilbert-base-multilingual-cased", "distilbert/distilbert-base-multilingual-cased", "distilbert", ()),
    ("distilbert-base-uncased-finetuned-sst-2-english",
     "distilbert/distilbert-base-uncased-finetuned-sst-2-english", "distilbert", ("distilbert-sst2",)),
    ("t5-small", "google-t5/t5-small", "t5", ()),
    ("t5-base", "google-t5/t5-base", "t5", ()),
    ("t5-large", "google-t5/t5-large", "t5", ()),
    ("albert-base-v2", "albert/albert-base-v2", "albert", ()),
    ("albert-large-v2", "albert/albert-large-v2", "albert", ()),
    ("xlnet-base-cased", "xlnet/xlnet-base-cased", "xlnet", ()),
    ("xlnet-large-cased", "xlnet/xlnet-large-cased", "xlnet", ()),
    ("camembert-base", "almanach/camembert-base", "camembert", ()),
)


@dataclass(frozen=True)
class TransformersConfig:
    """The ``config_class`` of an answer: transformers' config class ``name``, given ``config.json`` as its
    ``from_pretrained`` gives it (floats JSON cannot hold, written as ``{"__float__": "Infinity"}``, decoded)."""

    name: str

    def from_dict(self, raw: dict):
        import transformers

        cls = getattr(transformers, self.name)
        decode = getattr(cls, "_decode_special_floats", None)
        return cls.from_dict(decode(raw) if callable(decode) else raw)

    def __str__(self) -> str:
        return f"transformers:{self.name}"


def _heads(model_type: str) -> tuple[dict, dict]:
    """Heads (class name -> "transformers:Name") and tasks (task -> class name) from transformers' tables."""
    from transformers.models.auto import modeling_auto

    heads: dict[str, str] = {}
    tasks: dict[str, str] = {}
    for task, mappings in TASKS:
        for mapping in mappings:
            names = getattr(modeling_auto, mapping, {}).get(model_type)
            if not names:
                continue
            names = (names,) if isinstance(names, str) else tuple(names)
            for name in names:
                heads.setdefault(name, f"transformers:{name}")
            tasks.setdefault(task, names[0])
            break
    known = {mapping for _, mappings in TASKS for mapping in mappings}
    for mapping in sorted(dir(modeling_auto)):  # mappings TASKS does not list (MODEL_FOR_DECISION_...): heads too
        if mapping in known or not (mapping.startswith("MODEL_") and mapping.endswith("_MAPPING_NAMES")):
            continue
        names = getattr(modeling_auto, mapping, {}).get(model_type)
        if not names:
            continue
        names = (names,) if isinstance(names, str) else tuple(names)
        for name in names:
            heads.setdefault(name, f"transformers:{name}")
        task = mapping.removeprefix("MODEL_").removeprefix("FOR_").removesuffix("_MAPPING_NAMES")
        tasks.setdefault(task.lower().replace("_", "-"), names[0])
    return heads, tasks


def _more_heads(model_type: str, heads: dict) -> None:
    """The other model classes of the family's modeling module that no mapping names (GPT2DoubleHeadsModel),
    so that a config.json naming one loads. Read from the family package's lazy import table (the package
    is imported with its config class anyway); skipped where there is none."""
    import importlib

    from transformers.models.auto.configuration_auto import model_type_to_module_name

    try:
        package = importlib.import_module(f"transformers.models.{model_type_to_module_name(model_type)}")
    except ImportError:
        return
    table = getattr(package, "_class_to_module", None) or {}
    for name in sorted(name for name, module in table.items() if module.startswith("modeling_")):
        if not name.endswith("PreTrainedModel") and (name.endswith("Model") or "For" in name):
            heads.setdefault(name, f"transformers:{name}")


@zoo.hookimpl(trylast=True)
def zoo_fallback_architecture(model_type):
    """any model_type the installed transformers has a config class for"""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    config_class = CONFIG_MAPPING_NAMES.get(model_type)
    if not config_class:
        return None
    heads, tasks = _heads(model_type)
    if not heads:
        return None  # a config with no model class (a tokenizer-only or sub-config type)
    _more_heads(model_type, heads)
    default = tasks.get("base") or next(iter(heads))
    loading = {}
    for key, reason in TRANSFORMERS_LOADING.items():
        owner, _, cls = key.partition(":")
        if owner == model_type:
            loading[cls or "*"] = reason
    return zoo.Architecture(
        model_type=model_type,
        config_class=TransformersConfig(config_class),
        heads=heads,
        tasks=tasks,
        default_head=default,
        description=f"transformers' {config_class.removesuffix('Config')} (zoo's transformers fallback)",
        optional_weights=OPTIONAL_WEIGHTS,
        transformers_loading=loading,
    )


@zoo.hookimpl
def zoo_register_checkpoints(register):
    for name, repo, model_type, aliases in CHECKPOINTS:
        register(zoo.Checkpoint(name, repo, aliases=aliases, model_type=model_type))
