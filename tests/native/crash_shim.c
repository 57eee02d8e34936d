/* LD_PRELOAD shim for tests/test_crash.py: makes llama.cpp die of a real SIGSEGV.
 *
 * libllama calls into libggml-base through the PLT, so these definitions win
 * over ggml's own in every process the tests start with LD_PRELOAD set:
 * llama.cpp's tools and edgeq's Python workers alike.
 * EDGEQ_TEST_CRASH_AT=compute (default): the first graph computation crashes,
 * where ggml's CPU kernels run (the AMX crash happened there).
 * EDGEQ_TEST_CRASH_AT=load: opening any GGUF crashes (tools that never compute).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct gguf_init_params { bool no_alloc; void **ctx; };

static void crash(void) {
    /* The pointer itself is volatile: the compiler may not drop a store it cannot prove is to NULL. */
    static volatile int *volatile nowhere = NULL;
    *nowhere = 1;
}

/* ggml's own definition: the next in the global scope (llama.cpp's tools), or, where
 * libggml-base was opened locally (Python's ctypes), from that library itself. */
static void *real(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        void *lib = dlopen("libggml-base.so.0", RTLD_LAZY | RTLD_NOLOAD);
        f = lib ? dlsym(lib, name) : NULL;
    }
    return f;
}

static bool crash_at(const char *where) {
    const char *v = getenv("EDGEQ_TEST_CRASH_AT");
    return strcmp(v && *v ? v : "compute", where) == 0;
}

int ggml_backend_sched_graph_compute_async(void *sched, void *graph) {
    typedef int (*fn_t)(void *, void *);
    if (crash_at("compute")) crash();
    return ((fn_t)real("ggml_backend_sched_graph_compute_async"))(sched, graph);
}

void *gguf_init_from_file(const char *fname, struct gguf_init_params params) {
    typedef void *(*fn_t)(const char *, struct gguf_init_params);
    if (crash_at("load")) crash();
    return ((fn_t)real("gguf_init_from_file"))(fname, params);
}
