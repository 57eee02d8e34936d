"""Shared fixtures: an isolated environment, tiny checkpoints made on the fly, the fake hub."""
from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import FakeHub

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# The two xdist workers share the machine's cores: a llama.cpp run with a thread per core stalls whenever the other
# worker holds one (ggml's threads spin at every barrier).  One thread each, wherever a test asks for none
# (system.default_threads); tests prove behaviour, the benchmarks measure speed.
os.environ.setdefault("EDGEQ_THREADS", "1")


# A test that uses one of these converts or runs a real model, whether or not it says so: it is `slow`, and
# `make test-fast` (-m "not slow") leaves it out.
MODEL_FIXTURES = {"tiny_llama", "embedded_checkpoint", "embedded_outputs", "embedded_models", "qwen2_tokenizer",
                  "minilm_outputs",
                  "aarch64_build", "made", "nan_gguf"}


# The order in which the two workers take modules (--dist loadfile: a worker takes the next module when it has two
# tests left of its last), longest first (measured: `--durations=0`), so that neither is left with a long one at the
# end while the other idles; the short ones (a few seconds each) fill the end.  A module in neither list runs between
# them.  `make test` passes --no-loadscope-reorder: without it pytest-xdist orders modules by their number of tests.
LONGEST_FIRST = ("test_architectures", "test_bundle", "test_tune", "test_embeddings", "test_lora", "test_vlm", "test_reliability2", "test_convert_e2e",
                 "test_rpc", "test_eval", "test_ship", "test_doctor", "test_bench", "test_tune_fisher",
                 "test_layout", "test_upload", "test_bench_matrix", "test_crash", "test_api", "test_plan_calibration",
                 "test_sources")
SHORT_LAST = ("test_apple", "test_download", "test_inspect", "test_decisions", "test_files_manifest", "test_convert_errors",
              "test_buildcache", "test_cli", "test_quants", "test_vendor", "test_setup_portable",
              "test_ci_workflow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.module.__name__ if isinstance(item, pytest.Function) else ""
        if name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + 1 + SHORT_LAST.index(name) if name in SHORT_LAST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a module, the written order
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if MODEL_FIXTURES & set(item.fixturenames) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _vocabularies_read_once_per_machine() -> None:
    # Beside the builds (~/.cache/edgeq), keyed by the GGUF and the transformers that read it: 40-60 s of every
    # run was the same six vocabularies read again.
    from vocab import VOCAB_CACHE_ENV, cache_root

    os.environ[VOCAB_CACHE_ENV] = str(cache_root())


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the user's HF cache/token or writes outside its tmp dir."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("EDGEQ_NO_PROGRESS", "1")
    monkeypatch.setenv("EDGEQ_MODELS_DIR", str(tmp_path / "models"))


@pytest.fixture(autouse=True)
def _llama_cpp_stays_out_of_the_test_process() -> Iterator[None]:
    """llama.cpp runs in child processes only: a native crash then fails one test, never the whole run."""
    before = "llama_cpp" in sys.modules
    yield
    assert before or "llama_cpp" not in sys.modules, "this test loaded llama.cpp into the pytest process"


@pytest.fixture(scope="session")
def embedded_checkpoint() -> Path:
    """The real SmolLM2-135M-Instruct checkpoint (made once by setup under models/hf/)."""
    from edgeq.sources.embedded import ensure_embedded_model

    return ensure_embedded_model(REPO / "models")


def make_tiny_checkpoint(dest: Path, tokenizer_from: Path, *, arch: str = "llama", hidden: int = 256,
                         layers: int = 2, heads: int = 4, kv_heads: int = 2, ffn: int = 512,
                         initializer_range: float = 0.02) -> Path:
    """A randomly initialised model with a real tokenizer, saved as safetensors.

    ``initializer_range`` well above the default (0.02) gives peaked logits, for checks of arithmetic in which
    a wrong kernel must not hide in near-uniform noise.
    """
    import torch
    import transformers

    vocab = len(transformers.AutoTokenizer.from_pretrained(tokenizer_from))
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, initializer_range=initializer_range)
    if arch == "llama":
        cfg, cls = transformers.LlamaConfig(**common), transformers.LlamaForCausalLM
    elif arch == "qwen2":
        cfg, cls = transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM
    else:
        raise ValueError(arch)
    torch.manual_seed(0)
    model = cls(cfg).to(torch.float32)
    model.save_pretrained(dest)
    for f in TOKENIZER_FILES:
        if (tokenizer_from / f).exists():
            shutil.copy(tokenizer_from / f, dest / f)
    return dest


@pytest.fixture(scope="session")
def embedded_outputs(tmp_path_factory: pytest.TempPathFactory, embedded_checkpoint: Path) -> list[Path]:
    """The embedded model as F16, Q8_0 and Q4_K_M GGUFs: converted once per test session, for every test.

    Tests must not change these files; one that needs to damage a file copies it first.
    """
    from edgeq.conversion import convert
    from edgeq.sources import resolve

    # convert lets one run at a time into a folder and reuses what an earlier one made there: with several
    # pytest-xdist workers, the first converts and the others wait for its files.
    out = run_dir(tmp_path_factory) / "embedded-out"
    # No source: the embedded model as every verb's default names it, so the folder is the one a user's plain
    # `edgeq convert` makes and any verb's default run may reuse it.  Resolved where setup made its checkpoint
    # (embedded_checkpoint), as in a user's models folder: under this test's own (empty) models folder, resolving
    # would make the checkpoint again from the packaged GGUF (~30 s, on each worker).
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEQ_MODELS_DIR", str(embedded_checkpoint.parent.parent))
    try:
        src = resolve(None)
    finally:
        mp.undo()
    res = convert(src, quants=["Q8_0", "Q4_K_M"], outdir=out, progress=False)
    return [Path(o.path) for o in res.outputs]


@pytest.fixture(scope="session")
def minilm_outputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """all-MiniLM-L6-v2 (the packaged sentence-embedding model) as F16, Q8_0 and Q4_K_M GGUFs: converted once per
    test session (as ``embedded_outputs``), its checkpoint extracted once under the repository's models/."""
    from edgeq.conversion import convert
    from edgeq.sources import resolve
    from edgeq.sources.minilm import ensure_minilm

    ensure_minilm(REPO / "models")
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEQ_MODELS_DIR", str(REPO / "models"))  # resolve("minilm") finds the extracted copy there
    try:
        src = resolve("minilm")
    finally:
        mp.undo()
    res = convert(src, quants=["Q8_0", "Q4_K_M"], outdir=run_dir(tmp_path_factory) / "minilm-out", progress=False)
    return [Path(o.path) for o in res.outputs]


def run_dir(factory: pytest.TempPathFactory) -> Path:
    """The folder of this test run, which every pytest-xdist worker of it shares (each has its own under it)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def seed_folder(dest: Path, files: list[Path]) -> Path:
    """``dest`` holding ``files`` and their folder's manifest, as hard links where it can (copies elsewhere).

    edgeq replaces a file by renaming a new one over it, never by writing into it, so a link is as safe as a copy.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for f in [*files, files[0].parent / "edgeq-manifest.json"]:
        try:
            os.link(f, dest / f.name)
        except OSError:
            shutil.copy2(f, dest / f.name)
    return dest


@pytest.fixture
def embedded_models(embedded_outputs: list[Path], embedded_checkpoint: Path) -> Path:
    """This test's models folder already holding the embedded checkpoint (a link to setup's) and the session's
    conversions of it where convert puts them by default, so a command that converts the embedded model reuses
    them (as a user's second run does) and a verb's default run makes nothing."""
    from edgeq import config
    from edgeq.sources.embedded import embedded_model_dir

    link = embedded_model_dir()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(embedded_checkpoint, target_is_directory=True)
    return seed_folder(config.models_dir() / "SmolLM2-135M-Instruct", embedded_outputs)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, embedded_checkpoint: Path) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny-llama", embedded_checkpoint)


@pytest.fixture(scope="session")
def qwen2_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen2's real tokenizer, from the vocab-only GGUF llama.cpp ships for its own tests.

    (transformers 5 rebuilds a Qwen2 model's pre-tokenizer from the class, so a
    tiny Qwen2 needs Qwen2's own tokenizer for the converter to recognise it.)
    """
    from vocab import vocab_tokenizer

    dest = tmp_path_factory.mktemp("qwen2-tokenizer")
    vocab_tokenizer("qwen2").save_pretrained(dest)
    return dest


@pytest.fixture
def fake_hub() -> FakeHub:
    hub = FakeHub().start()
    yield hub
    hub.stop()


def write_minimal_checkpoint(dest: Path, **overrides: object) -> Path:
    """A folder that passes checkpoint checks up to the weights; tests then break one thing."""
    dest.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": 256, **overrides}
    (dest / "config.json").write_text(json.dumps(cfg))
    (dest / "tokenizer.json").write_text("{}")
    return dest


def final_ggufs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.gguf")) if folder.exists() else []


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[object, str, str]:
    """Run ``edgeq`` through its real entry point: (exit code, stderr, stdout); 0 when it returned."""
    from edgeq.cli import main

    code: object = 0
    try:
        main(args)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.err.strip(), captured.out


def write_small_gguf(path: Path, *, name: str, add_bos: bool, tokens: list[str] | None = None,
                     file_type: int | None = None, norm: str = "norm.weight", weight: str = "blk.0.w.weight") -> Path:
    """A complete GGUF of a few KiB: metadata, one F32 and one Q8_0 tensor (64 wide)."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    w = GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_tokenizer_model("gpt2")
    if tokens:
        w.add_token_list(tokens)
    w.add_add_bos_token(add_bos)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_tensor(norm, np.ones(64, dtype=np.float32))
    q = quantize(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), GGMLQuantizationType.Q8_0)
    w.add_tensor(weight, q, raw_shape=q.shape, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
