"""edgeq's PEP 517 build backend: scikit-build-core, after filling ``vendor/`` from its pinned sources.

scikit-build-core builds the wheel with CMake, as llama-cpp-python's does; what it has no hook for is
edgeq's rule that third-party source is never committed but fetched, checksummed, when the sdist is
made.  So building an sdist (or a wheel straight from a clone) first runs ``vendor_llama_cpp.py --all``:
the llama.cpp tree, its bindings and the default model and texts, each checked against its sha256.
A wheel built from that sdist finds them all there and reads nothing from the network.  An editable
install (``scripts/setup.sh``) needs none of it: the clone builds llama.cpp itself and runs in place.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from scikit_build_core import build as _skbuild

VENDOR = Path(__file__).resolve().parent / "vendor_llama_cpp.py"

# The hooks scikit-build-core answers unchanged.
get_requires_for_build_sdist = _skbuild.get_requires_for_build_sdist
get_requires_for_build_wheel = _skbuild.get_requires_for_build_wheel
get_requires_for_build_editable = _skbuild.get_requires_for_build_editable
prepare_metadata_for_build_wheel = _skbuild.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = _skbuild.prepare_metadata_for_build_editable
build_editable = _skbuild.build_editable


def _fill_vendor() -> None:
    subprocess.run([sys.executable, str(VENDOR), "--all"], check=True, stdout=sys.stderr)


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    """The sdist, carrying the pinned, checked ``vendor/`` (its tree, bindings and data)."""
    _fill_vendor()
    return str(_skbuild.build_sdist(sdist_directory, config_settings))


def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                metadata_directory: str | None = None) -> str:
    """The wheel: llama.cpp's tools and libraries compiled into ``edgeq/_native`` (CMakeLists.txt's install)."""
    _fill_vendor()  # a no-op from an sdist (the checksums match); a clone fetches what it lacks
    return str(_skbuild.build_wheel(wheel_directory, config_settings, metadata_directory))
