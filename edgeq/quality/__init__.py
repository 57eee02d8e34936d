"""What quantization costs in quality: perplexity, KL-divergence against full precision, multiple-choice accuracy."""
from ..sources.texts import default_text
from .choice import choice
from .data import ChoiceItem, default_choices, load_choices, load_text
from .evaluate import evaluate
from .models import model_refs
from .ppl import perplexity
from .results import SCHEMA, EvalResults, ModelRef, Row

__all__ = ["SCHEMA", "ChoiceItem", "EvalResults", "ModelRef", "Row", "choice", "default_choices", "default_text",
           "evaluate", "load_choices", "load_text", "model_refs", "perplexity"]
