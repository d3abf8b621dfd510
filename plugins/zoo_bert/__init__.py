"""zoo's built-in BERT plugin.

Registered through the ``zoo`` entry-point group exactly as a third-party plugin is, so
``ZOO_DISABLE_PLUGINS=bert`` turns it off. It imports only zoo's public API; the transformers classes
are named as strings and imported when a model is built.
"""

import zoo

HEADS = (
    "BertModel",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
    "BertForMultipleChoice",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertLMHeadModel",
)

TASKS = {
    "base": "BertModel",
    "feature-extraction": "BertModel",
    "fill-mask": "BertForMaskedLM",
    "text-classification": "BertForSequenceClassification",
    "token-classification": "BertForTokenClassification",
    "question-answering": "BertForQuestionAnswering",
    "multiple-choice": "BertForMultipleChoice",
    "next-sentence-prediction": "BertForNextSentencePrediction",
    "pretraining": "BertForPreTraining",
    "text-generation": "BertLMHeadModel",
}

# Named checkpoints: name, hub repository, aliases. Adding one is a one-line edit.
CHECKPOINTS = (
    ("bert-base-cased", "google-bert/bert-base-cased", ()),
    ("bert-base-uncased", "google-bert/bert-base-uncased", ()),
    ("bert-large-cased", "google-bert/bert-large-cased", ()),
    ("bert-large-uncased", "google-bert/bert-large-uncased", ()),
    ("bert-base-multilingual-cased", "google-bert/bert-base-multilingual-cased", ("mbert",)),
    ("all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", ("minilm",)),
)


@zoo.hookimpl
def zoo_register_architectures(register):
    register(
        zoo.Architecture(
            model_type="bert",
            config_class="transformers:BertConfig",
            heads={name: f"transformers:{name}" for name in HEADS},
            tasks=TASKS,
            default_head="BertModel",
            description="BERT encoders (transformers' modeling_bert)",
            # Masked-LM checkpoints (bert-base-cased's own head) have no pooler: loading one as BertModel
            # initialises the pooler, as transformers does. Any other missing body weight is an error.
            # Older key names (LayerNorm.gamma/beta) are renamed by transformers' conversions (on by default).
            optional_weights=(r"(^|\.)pooler\.",),
        )
    )


@zoo.hookimpl
def zoo_register_checkpoints(register):
    for name, repo, aliases in CHECKPOINTS:
        register(zoo.Checkpoint(name, repo, aliases=aliases, model_type="bert"))
