"""Typed errors: each carries one line that names the problem and the fix.

The CLI has one handler (``cli.main``) that prints ``Error: <message>`` (or a
JSON object under ``--json``) and exits with the error's ``exit_code``.
"""
from __future__ import annotations

# Exit codes are part of edgeq's interface for scripts: keep them stable.
EXIT_OK = 0
EXIT_USER = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_CRASH = 4
EXIT_INTERRUPTED = 130


class EdgeqError(Exception):
    """Base class: a failure a person can act on. ``str(e)`` is the one line."""

    exit_code = EXIT_USER
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        # One line, always: messages quote names and text from damaged files (fuzzing found newlines).
        message = message.replace("\r", " ").replace("\n", " ")
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}".strip() if hint else message)

    def to_dict(self) -> dict[str, object]:
        return {"error": self.kind, "message": str(self), "exit_code": self.exit_code}


def from_dict(d: dict[str, object]) -> EdgeqError:
    """Rebuild an error a child process reported (``to_dict``'s fields): the same line, kind and exit code."""
    kind = str(d.get("error") or d.get("kind") or "error")
    err = (UsageError if kind == "usage" else EdgeqError)(str(d.get("message", "")))
    err.kind = kind
    err.exit_code = int(d.get("exit_code", err.exit_code))  # type: ignore[call-overload]
    return err


class UsageError(EdgeqError):
    """Bad flags or names (unknown quant type, conflicting options)."""

    exit_code = EXIT_USAGE
    kind = "usage"


class SourceError(EdgeqError):
    """The model source cannot be used: missing, unreachable, corrupt, unsupported."""

    kind = "source"


class AdapterMismatch(SourceError):
    """A LoRA adapter made for another base: another architecture, or tensors of other shapes (exit 1, like any
    source that cannot be used; refused before any conversion, merge or load)."""

    kind = "adapter"


class HubError(SourceError):
    """The Hugging Face Hub refused or could not be reached."""

    kind = "hub"


class UnsafeSourceError(SourceError):
    """The source would make edgeq run someone else's code (pickle, remote code)."""

    kind = "unsafe"


class GGUFError(EdgeqError):
    """A file is not a readable GGUF."""

    kind = "gguf"


class DiskSpaceError(EdgeqError):
    """Not enough free disk for the outputs."""

    kind = "disk"


class VerifyFailed(EdgeqError):
    """Files in a convert folder do not match their manifest."""

    kind = "verify"


class RpcError(EdgeqError):
    """An RPC server cannot be used: unreachable, wrong protocol, or gone mid-run."""

    kind = "rpc"

    def __init__(self, endpoint: str, message: str, *, hint: str | None = None) -> None:
        self.endpoint = endpoint
        super().__init__(message, hint=hint)


class ToolchainError(EdgeqError):
    """The vendored llama.cpp build is missing, stale or failed."""

    exit_code = EXIT_ENVIRONMENT
    kind = "toolchain"


class ToolFailed(ToolchainError):
    """A native tool exited non-zero; ``tail`` holds its last output lines."""

    kind = "tool"

    def __init__(self, tool: str, returncode: int, tail: str, *, hint: str | None = None) -> None:
        self.tool = tool
        self.returncode = returncode
        self.tail = tail
        self.last_line = tail.strip().splitlines()[-1].strip() if tail.strip() else "no output"
        super().__init__(f"{tool} failed (exit {returncode}): {self.last_line}", hint=hint)


class NativeCrash(EdgeqError):
    """llama.cpp (or torch) died of a signal (SIGSEGV, SIGILL, SIGABRT, SIGBUS, SIGFPE) in a child process.

    A fault in native code on this host, not in the user's input: its own exit
    code, so scripts can tell it from a tool that refused a file.
    """

    exit_code = EXIT_CRASH
    kind = "crash"

    def __init__(self, signal_name: str, doing: str, cause: str, *, detail: str | None = None,
                 hint: str | None = None, engine: str = "llama.cpp") -> None:
        self.signal_name, self.doing, self.cause = signal_name, doing, cause
        tail = f" (last output: {detail})" if detail else ""
        super().__init__(f"{engine} crashed ({signal_name}) {doing}: {cause}{tail}.", hint=hint)
