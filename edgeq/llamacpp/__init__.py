"""Everything edgeq asks of the vendored llama.cpp tree, behind one door.

``build`` finds the build, its versions and CPU levels; ``process`` runs its tools
(``run_tool``: deadline, peak RSS, a run that lost its last lines rerun), ``crashes`` turns a crash into one
line, and ``worker`` runs edgeq's own worker processes; ``quantize`` (llama-quantize, llama-imatrix), ``fitparams``
(llama-fit-params), ``would_write`` (the converter's header for a checkpoint, no weight read), ``rpc`` (servers seen from outside) and ``rpc_server``
(``edgeq rpc-server``) are the tools edgeq drives.
"""
from .build import (
    TOOLS,
    Toolchain,
    cpu_variants,
    find_toolchain,
    import_llama_cpp,
    level_bin_dir,
    llama_cpp_commit,
    llama_cpp_version,
    loaded_cpu_variant,
    measure_bandwidth,
    source_stamp,
    supported_architectures,
    use_our_libllama,
)
from .crashes import CRASH_CAUSES, DOCTOR_HINT, crash_error
from .devices import DeviceReport, list_devices, parse_device_list
from .process import (
    DISK_FULL_HINT,
    SETUP_HINT,
    ToolOutput,
    die_with_parent,
    json_array,
    own_peak_rss,
    run_tool,
)
from .worker import Worker, run_worker_once
from .would_write import converter_header, stub_checkpoint

__all__ = ["CRASH_CAUSES", "DISK_FULL_HINT", "DOCTOR_HINT", "SETUP_HINT", "TOOLS", "DeviceReport", "ToolOutput",
           "Toolchain", "Worker", "list_devices", "parse_device_list",
           "converter_header", "cpu_variants", "crash_error", "die_with_parent", "find_toolchain", "import_llama_cpp", "json_array", "level_bin_dir",
           "llama_cpp_commit", "llama_cpp_version", "loaded_cpu_variant", "measure_bandwidth", "own_peak_rss",
           "run_tool", "run_worker_once", "source_stamp", "stub_checkpoint", "supported_architectures",
           "use_our_libllama"]
