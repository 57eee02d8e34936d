"""Evaluation data: the user's own text, multiple-choice JSONL, and the default choice set.

The default texts themselves (Shakespeare, offline) come from ``edgeq.sources.texts``.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..sources import texts

DEFAULT_CHOICE_ITEMS = 200
N_ENDINGS = 4


@dataclass
class ChoiceItem:
    context: str
    endings: list[str]
    label: int


def load_text(path: str | Path) -> tuple[str, str]:
    """(text, description) of a user's text file, with one clear error for each way it can be wrong."""
    p = Path(path).expanduser()
    return texts.read_user_text(p, "--text", hint="Pass a UTF-8 plain-text file of a few thousand words at least."), str(p)


def default_choices(n: int = DEFAULT_CHOICE_ITEMS, seed: int = 0) -> list[ChoiceItem]:
    """"Which line comes next": two lines of a speech, the true third line and three lines from elsewhere.

    Distractors are drawn among lines of similar length, so length alone gives little away.
    """
    rng = random.Random(seed)
    speeches = [s for play in texts.CHOICE_PLAYS for s in texts.speeches(play)]
    pool = sorted({line for s in speeches for line in s if 20 <= len(line) <= 80})
    rng.shuffle(speeches)
    items: list[ChoiceItem] = []
    for speech in speeches:
        if len(items) >= n:
            break
        i = rng.randrange(0, len(speech) - 2)
        context, answer = speech[i] + "\n" + speech[i + 1] + "\n", speech[i + 2]
        if not 20 <= len(answer) <= 80:
            continue
        near = [x for x in pool if abs(len(x) - len(answer)) <= max(4, len(answer) // 5) and x not in speech]
        if len(near) < N_ENDINGS - 1:
            continue
        endings = rng.sample(near, N_ENDINGS - 1) + [answer]
        rng.shuffle(endings)
        items.append(ChoiceItem(context, endings, endings.index(answer)))
    return items


def load_choices(path: str | Path) -> list[ChoiceItem]:
    """Read JSONL: ``{"context", "endings", "label"}`` per line, or PIQA's ``{"goal", "sol1", "sol2", "label"}``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--data {p} does not exist.", hint="Pass a JSONL file, one item per line.")
    items = []
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            items.append(_item(json_line(line, p, n), p, n))
    if not items:
        raise UsageError(f"--data {p} holds no items.", hint="One JSON object per line.")
    return items


def json_line(line: str, p: Path, n: int) -> dict[str, object]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise UsageError(f"{p} line {n}: not valid JSON ({e.msg}).", hint="One JSON object per line.") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{p} line {n}: expected a JSON object, got {type(obj).__name__}.",
                         hint='Write {"context": ..., "endings": [...], "label": i}.')
    return obj


def _item(obj: dict[str, object], p: Path, n: int) -> ChoiceItem:
    need: tuple[str, ...]
    context: object
    endings: object
    if "goal" in obj:  # PIQA, formatted as lm-evaluation-harness does
        need = ("goal", "sol1", "sol2", "label")
        context, endings = f"Question: {obj.get('goal')}\nAnswer:", [f" {obj.get('sol1')}", f" {obj.get('sol2')}"]
    else:
        need = ("context", "endings", "label")
        context, endings = obj.get("context"), obj.get("endings")
    missing = [k for k in need if k not in obj]
    if missing:
        raise UsageError(f"{p} line {n}: missing field {missing[0]!r}.",
                         hint='Each line needs "context", "endings" and "label" (or PIQA\'s goal/sol1/sol2/label).')
    if not isinstance(context, str) or not isinstance(endings, list) or len(endings) < 2 \
            or not all(isinstance(e, str) and e for e in endings):
        raise UsageError(f"{p} line {n}: \"context\" must be a string and \"endings\" a list of 2+ non-empty strings.",
                         hint='Example: {"context": "The sky is", "endings": [" blue", " loud"], "label": 0}')
    label = obj["label"]
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
        raise UsageError(f"{p} line {n}: \"label\" must be an integer from 0 to {len(endings) - 1}, got {label!r}.",
                         hint="label is the index of the right ending.")
    return ChoiceItem(context, list(endings), label)
