"""What edgeq reads from the vendored ``convert_hf_to_gguf.py`` without running it, and from its traceback when
it fails: the GGUF architecture each HF class becomes, and the check that stopped it."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..errors import EdgeqError, SourceError, ToolFailed

# In file order: a registration (its names may span lines), a class, a class's own model_arch.
_PARTS = re.compile(r"^@ModelBase\.register\(([^)]*)\)|^class (\w+)\(([^)]*)\):|^    model_arch = gguf\.MODEL_ARCH\.(\w+)",
                    re.MULTILINE)
_ARCH_NAME = re.compile(r"MODEL_ARCH\.(\w+):\s*\"([^\"]+)\"")


def gguf_arch_of(hf_arch: str, llama_dir: Path) -> str | None:
    """The ``general.architecture`` the converter writes for the HF class ``hf_arch`` ("BertModel" → "bert"),
    read from its registry; None when it registers no such class."""
    return _registry(llama_dir).get(hf_arch)


@lru_cache(maxsize=2)
def _registry(llama_dir: Path) -> dict[str, str]:
    # Each converter class: the names it registers, its bases and its own model_arch (or its base's).
    names: dict[str, list[str]] = {}
    bases: dict[str, list[str]] = {}
    arch: dict[str, str] = {}
    files = sorted((llama_dir / "conversion").glob("*.py")) + [llama_dir / "convert_hf_to_gguf.py"]
    for py in (f for f in files if f.is_file()):
        pending: list[str] = []
        current = None
        for m in _PARTS.finditer(py.read_text(encoding="utf-8", errors="replace")):
            registered, cls, cls_bases, model_arch = m.groups()
            if registered is not None:
                pending += re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", registered)
            elif cls is not None:
                current = cls
                names[cls], pending = pending, []
                bases[cls] = [b.strip().split(".")[-1] for b in cls_bases.split(",")]
            elif current and current not in arch:
                arch[current] = model_arch

    def own(cls: str, seen: frozenset[str] = frozenset()) -> str | None:
        if cls in arch or cls in seen:
            return arch.get(cls)
        return next((a for b in bases.get(cls, []) if (a := own(b, seen | {cls}))), None)

    constants = llama_dir / "gguf-py" / "gguf" / "constants.py"
    text = constants.read_text(encoding="utf-8", errors="replace") if constants.is_file() else ""
    gguf_names = dict(_ARCH_NAME.findall(text))
    out = {}
    for cls, registered in names.items():
        enum = own(cls)
        if enum and enum in gguf_names:
            out.update({n: gguf_names[enum] for n in registered})
    return out


_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)')
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::\s*(.*))?$")
_TRAILING_COMMENT = re.compile(r"\s+#.*$")
# Checks whose cause edgeq knows, by the source line that failed: the fix to name.
KNOWN_FIXES = (
    (re.compile(r"vocab.*\)\s*<\s*vocab_size|len\(tokens\)\s*==\s*vocab\.vocab_size"),
     "The tokenizer holds more tokens than config.json's vocab_size: set vocab_size to at least the tokenizer's "
     "size (its largest token id + 1), or use the tokenizer the model was trained with."),
)


def python_failure(tail: str) -> tuple[str, str | None] | None:
    """(reason, fix) from the Python traceback that ends ``tail`` (the converter's output), or None.

    A bare ``AssertionError`` says nothing by itself: the reason is then the failing check, the source line
    under the traceback's last frame, and where it is (``conversion/base.py:1588, in get_vocab_base``)."""
    lines = [ln.rstrip() for ln in tail.splitlines() if ln.strip()]
    if not lines or not (exc := _EXCEPTION.match(lines[-1].strip())):
        return None
    frame = source = None
    for i, line in enumerate(lines[:-1]):
        if m := _FRAME.match(line):
            frame = m
            nxt = lines[i + 1].strip() if i + 1 < len(lines) - 1 else ""
            source = None if _FRAME.match(nxt) or set(nxt) <= set("^~ ") else _TRAILING_COMMENT.sub("", nxt)
    name, message = exc.group(1), (exc.group(2) or "").strip()
    where = ""
    if frame:
        path = Path(frame.group(1))
        shown = f"{path.parent.name}/{path.name}" if path.parent.name == "conversion" else path.name
        where = f" ({shown}:{frame.group(2)}, in {frame.group(3)})"
    if name.endswith("AssertionError") and source:
        check = source.removeprefix("assert ").strip()
        reason = f"its check `{check}` failed" + (f" ({message})" if message else "") + where
    elif message:
        reason = f"{name}: {message}" + where
    else:
        reason = f"{name} at `{source}`{where}" if source else f"{name}{where}"
    fix = next((hint for pattern, hint in KNOWN_FIXES if source and pattern.search(source)), None)
    return reason, fix


def converter_error(e: ToolFailed, src: str, *, doing: str = "convert") -> EdgeqError | None:
    """The converter's failure as one line naming what failed in it, or None when its output holds no traceback.

    A failed check (an assertion) is the checkpoint's problem, exit 1; any other exception keeps ``ToolFailed``'s
    exit code, with its reason and where it was raised."""
    found = python_failure(e.tail)
    if found is None:
        return None
    reason, fix = found
    if reason.startswith("its check"):
        return SourceError(f"the vendored converter cannot {doing} {src}: {reason}.",
                           hint=fix or "The checkpoint does not hold what the converter expects of its architecture; "
                                       "check config.json and the tokenizer against the model's original repo.")
    return ToolFailed(e.tool, e.returncode, reason, hint=fix or e.hint)


_MMPROJ_MAP = re.compile(r"^MMPROJ_MODEL_MAP[^=]*=\s*\{(.*?)^\}", re.MULTILINE | re.DOTALL)


@lru_cache(maxsize=2)
def projector_architectures(llama_dir: Path) -> frozenset[str]:
    """HF classes for which the vendored converter writes a multimodal projector (``--mmproj``): the keys of its
    ``MMPROJ_MODEL_MAP`` (read, not imported: importing the converter's package pulls in torch)."""
    init = llama_dir / "conversion" / "__init__.py"
    text = init.read_text(encoding="utf-8", errors="replace") if init.is_file() else ""
    found = _MMPROJ_MAP.search(text)
    return frozenset(re.findall(r"^\s*[\"']([A-Za-z0-9_]+)[\"']\s*:", found.group(1), re.MULTILINE) if found else ())
