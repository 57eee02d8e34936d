/* edgeq-bandwidth: how fast this machine streams memory to one process, for the generation roofline.
 *
 * Token generation reads every weight once per token, so its ceiling is the read
 * bandwidth of DRAM.  A ceiling that llama.cpp can beat is worthless, so this
 * tries the ways a reader can stream memory and keeps the best:
 *   - the widest loads the CPU has (function multi-versioning: AVX-512, AVX2 or
 *     the baseline, picked at run time, so one binary is right on every x86 CPU;
 *     a single SSE2 stream per core fell ~5% short of llama.cpp's F32 decode);
 *   - 1, 2, 4 and 8 concurrent streams per thread (matrix-vector kernels read
 *     several rows at once, and a core's prefetchers keep more misses in flight
 *     over several streams than over one);
 *   - the thread count edgeq runs llama.cpp with (argument 3; OpenMP's default
 *     otherwise), each thread on its own slice;
 *   - a working set far larger than any cache, touched before timing, and the
 *     best of several passes per configuration.
 * Every pass's figure is printed too, so a caller can report the spread.
 * Usage: edgeq-bandwidth [MiB=512] [passes=5] [threads=0: OpenMP default]
 * Prints one JSON object.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Sum n words as `streams` interleaved sub-slices read side by side (integer adds: associative,
 * so the compiler vectorises each stream with the widest loads the chosen version has). */
MULTIVERSION
static uint64_t sum_streams(const uint32_t *a, size_t n, int streams) {
    size_t len = n / (size_t)streams;
    const uint32_t *p0 = a, *p1 = a + len, *p2 = a + 2 * len, *p3 = a + 3 * len;
    const uint32_t *p4 = a + 4 * len, *p5 = a + 5 * len, *p6 = a + 6 * len, *p7 = a + 7 * len;
    uint32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    switch (streams) {
    case 1:
        for (size_t i = 0; i < len; i++) s0 += p0[i];
        break;
    case 2:
        for (size_t i = 0; i < len; i++) { s0 += p0[i]; s1 += p1[i]; }
        break;
    case 4:
        for (size_t i = 0; i < len; i++) { s0 += p0[i]; s1 += p1[i]; s2 += p2[i]; s3 += p3[i]; }
        break;
    default:
        for (size_t i = 0; i < len; i++) {
            s0 += p0[i]; s1 += p1[i]; s2 += p2[i]; s3 += p3[i];
            s4 += p4[i]; s5 += p5[i]; s6 += p6[i]; s7 += p7[i];
        }
    }
    return (uint64_t)s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

MULTIVERSION
static void copy_words(uint32_t *restrict b, const uint32_t *restrict a, size_t n) {
    for (size_t i = 0; i < n; i++) b[i] = a[i];
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 512;
    int passes = argc > 2 ? atoi(argv[2]) : 5;
    int threads = 1;
#ifdef _OPENMP
    if (argc > 3 && atoi(argv[3]) > 0) omp_set_num_threads(atoi(argv[3]));
    threads = omp_get_max_threads();
#endif
    if (mib < 64 || passes < 1 || passes > 100) { fprintf(stderr, "usage: edgeq-bandwidth [MiB>=64] [passes 1-100] [threads]\n"); return 2; }
    size_t n = mib * 1024 * 1024 / sizeof(uint32_t);
    uint32_t *a = aligned_alloc(4096, n * sizeof(uint32_t));
    uint32_t *b = aligned_alloc(4096, n * sizeof(uint32_t));
    if (!a || !b) { fprintf(stderr, "cannot allocate %zu MiB\n", 2 * mib); return 1; }
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { a[i] = (uint32_t)(i & 1023); b[i] = 0; }

    static const int stream_counts[] = {1, 2, 4, 8};
    double best_read = 0, best_copy = 0, samples[4][100];
    int best_streams = 1;
    uint64_t sink = 0;
    /* Passes go in rounds over the configurations, so the VM's drift hits each alike. */
    for (int r = 0; r < passes; r++) {
        for (int c = 0; c < 4; c++) {
            int streams = stream_counts[c];
            uint64_t total = 0;
            size_t read_words = 0;
            double t0 = now();
            #pragma omp parallel reduction(+:total)
            {
                int t = 0, nt = 1;
#ifdef _OPENMP
                t = omp_get_thread_num();
                nt = omp_get_num_threads();
#endif
                size_t chunk = (n / (size_t)nt) & ~(size_t)1023;  /* whole cache lines per stream */
                total += sum_streams(a + (size_t)t * chunk, chunk, streams);
                if (t == 0) read_words = chunk * (size_t)nt;
            }
            double dt = now() - t0;
            sink += total;
            double bw = read_words * sizeof(uint32_t) / dt;
            samples[c][r] = bw;
            if (bw > best_read) { best_read = bw; best_streams = streams; }
        }
        double t0 = now();
        #pragma omp parallel
        {
            int t = 0, nt = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            nt = omp_get_num_threads();
#endif
            size_t chunk = n / (size_t)nt, start = (size_t)t * chunk;
            copy_words(b + start, a + start, t == nt - 1 ? n - start : chunk);
        }
        double dt = now() - t0;
        if (2.0 * n * sizeof(uint32_t) / dt > best_copy) best_copy = 2.0 * n * sizeof(uint32_t) / dt;
    }
    int bi = best_streams == 1 ? 0 : best_streams == 2 ? 1 : best_streams == 4 ? 2 : 3;
    printf("{\"read_gbps\": %.2f, \"copy_gbps\": %.2f, \"streams\": %d, \"read_samples_gbps\": [",
           best_read / 1e9, best_copy / 1e9, best_streams);
    for (int r = 0; r < passes; r++) printf("%s%.2f", r ? ", " : "", samples[bi][r] / 1e9);
    printf("], \"bytes\": %zu, \"threads\": %d, \"passes\": %d, \"check\": %d}\n",
           n * sizeof(uint32_t), threads, passes, sink > 0);
    free(a); free(b);
    return 0;
}
