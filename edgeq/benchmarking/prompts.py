"""Benchmark prompts: English and Hindi by default, the same token count for every model.

The gemma-7b study saw a quantized model drift out of Hindi, so a Hindi prompt
is part of every default run and its continuation is kept in the results.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..sources.texts import read_user_text

DEFAULT_PROMPTS = {
    "en": ("The history of computing is a story of machines that became smaller, cheaper and faster. "
           "Early computers filled whole rooms and were used by governments to calculate artillery tables "
           "and break codes. The invention of the transistor and then the integrated circuit made it possible "
           "to put thousands, then millions and finally billions of switches on a single chip. Today a phone "
           "in a pocket is more powerful than the machines that guided the first missions to the Moon, and "
           "people ask whether language models can run on such small devices without a data centre. "),
    "hi": ("भारत एक विशाल देश है जिसकी संस्कृति, भाषाएँ और परंपराएँ बहुत विविध हैं। यहाँ हिमालय के ऊँचे पर्वत हैं, "
           "गंगा और यमुना जैसी पवित्र नदियाँ हैं, और दक्षिण में लंबे समुद्र तट हैं। प्राचीन काल से भारत विज्ञान, गणित और "
           "दर्शन का केंद्र रहा है। शून्य की अवधारणा और दशमलव प्रणाली यहीं विकसित हुई। आज भारत सूचना प्रौद्योगिकी के क्षेत्र "
           "में दुनिया के अग्रणी देशों में से एक है, और छोटे उपकरणों पर भाषा मॉडल चलाना यहाँ के लोगों के लिए भी उपयोगी है। "),
}


def load_prompts(prompt_file: str | Path | None) -> dict[str, str]:
    """The default prompts, or one named "file" from ``--prompt-file``."""
    if prompt_file is None:
        return dict(DEFAULT_PROMPTS)
    p = Path(prompt_file)
    return {p.stem: read_user_text(p, "--prompt-file", hint="Pass a UTF-8 text file with some text in it.")}


def fit(tokens: list[int], n: int, *, keep_first: int = 0) -> list[int]:
    """Exactly ``n`` tokens: the text's tokens repeated as often as needed.

    ``keep_first`` tokens (a BOS) stay at the front only once.
    """
    head, body = tokens[:keep_first], tokens[keep_first:]
    if not body:
        raise UsageError("the prompt has no tokens.", hint="Use a longer --prompt-file.")
    need = n - len(head)
    return head + (body * (need // len(body) + 1))[:need]


def sequences(tokens: list[int], batch: int, *, keep_first: int = 0) -> list[list[int]]:
    """``batch`` independent sequences of equal length: the prompt rotated by a few tokens each."""
    head, body = tokens[:keep_first], tokens[keep_first:]
    return [head + body[i * 7 % len(body):] + body[:i * 7 % len(body)] for i in range(batch)]
