/* edgeq-bandwidth: how fast this machine streams memory, for the generation roofline.
 *
 * Token generation reads every weight once per token, so its ceiling is the
 * read bandwidth of DRAM.  numpy's sum reaches less than half of it here, so
 * this is a plain C kernel: an integer sum (associative, so the compiler
 * vectorises it freely) over a buffer far larger than any cache, split across
 * threads with OpenMP.
 * Prints one JSON object: {"read_gbps": ..., "copy_gbps": ..., "bytes": ..., "threads": ...}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 512;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    size_t n = mib * 1024 * 1024 / sizeof(float);
    unsigned *a = aligned_alloc(64, n * sizeof(float));
    unsigned *b = aligned_alloc(64, n * sizeof(float));
    if (!a || !b) { fprintf(stderr, "cannot allocate %zu MiB\n", 2 * mib); return 1; }
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { a[i] = (unsigned)(i & 1023); b[i] = 0; }

    double best_read = 0, best_copy = 0;
    unsigned long long sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        unsigned total = 0;
        #pragma omp parallel for reduction(+:total) schedule(static)
        for (size_t i = 0; i < n; i++) total += a[i];
        double dt = now() - t0;
        sink += total;
        if (n * sizeof(float) / dt > best_read) best_read = n * sizeof(float) / dt;

        t0 = now();
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) b[i] = a[i];
        dt = now() - t0;
        if (2.0 * n * sizeof(float) / dt > best_copy) best_copy = 2.0 * n * sizeof(float) / dt;
    }
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("{\"read_gbps\": %.2f, \"copy_gbps\": %.2f, \"bytes\": %zu, \"threads\": %d, \"check\": %d}\n",
           best_read / 1e9, best_copy / 1e9, n * sizeof(float), threads, sink > 0);
    free(a); free(b);
    return 0;
}
