# Cross-compiles edgeq's llama.cpp for 64-bit ARM Linux (Raspberry Pi 5 and other
# edge boards) with Debian's GNU cross toolchain (`apt install g++-aarch64-linux-gnu`).
#
#   cmake -S . -B build-aarch64 --toolchain cmake/aarch64-linux-gnu.cmake
#
# edgeq.llamacpp.cross drives it (`edgeq bundle --arch aarch64`); the CPU levels
# built are the CMakeLists' aarch64 EDGEQ_CPU_VARIANTS.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(EDGEQ_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${EDGEQ_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${EDGEQ_CROSS_TRIPLE}-g++)
# Libraries and headers from the cross sysroot only; build tools from the host.
set(CMAKE_FIND_ROOT_PATH /usr/${EDGEQ_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
