"""What quantization costs in quality: perplexity, KL-divergence against full precision, multiple-choice accuracy."""
from ..sources.texts import default_text
from .choice import choice
from .data import ChoiceItem, default_choices, load_choices, load_text
from .models import resolve
from .ppl import perplexity
from .results import SCHEMA, EvalResults, ModelRef, Row

__all__ = ["SCHEMA", "ChoiceItem", "EvalResults", "ModelRef", "Row", "choice", "default_choices", "default_text",
           "load_choices", "load_text", "perplexity", "resolve"]
