"""What quantization costs in quality: perplexity, KL-divergence against full precision, multiple-choice accuracy."""
from .choice import choice
from ..texts import default_text
from .data import ChoiceItem, default_choices, load_choices, load_text
from .ppl import perplexity
from .results import SCHEMA, EvalResults, ModelRef, Row
from .models import resolve

__all__ = ["SCHEMA", "ChoiceItem", "EvalResults", "ModelRef", "Row", "choice", "default_choices", "default_text",
           "load_choices", "load_text", "perplexity", "resolve"]
