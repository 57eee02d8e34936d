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
 *   - the thread count edgeq runs llama.cpp with (argument 3; every online CPU
 *     otherwise), each thread on its own slice;
 *   - a working set far larger than any cache, touched before timing (by the
 *     thread that later reads it), and the best of several passes per configuration.
 * Threads are POSIX threads, not OpenMP: Apple's clang has no OpenMP, and a kernel
 * that silently fell back to one thread there measured a fraction of an M1's
 * bandwidth.  Every pass counts the distinct OS threads that read their slice and
 * the output says the fewest seen ("threads_ran"), so a caller can check that every
 * thread asked for took part.
 * Every pass's figure is printed too, so a caller can report the spread.
 * Usage: edgeq-bandwidth [MiB=512] [passes=5] [threads=0: every online CPU]
 * Prints one JSON object.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

#define MAX_THREADS 1024

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The OS's id of the calling thread: distinct for every thread alive at once. */
static uint64_t os_thread_id(void) {
#if defined(__linux__)
    return (uint64_t)syscall(SYS_gettid);
#elif defined(__APPLE__)
    uint64_t id = 0;
    pthread_threadid_np(NULL, &id);
    return id;
#else
    return (uint64_t)(uintptr_t)pthread_self();
#endif
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

enum job { INIT, READ, COPY };

struct pass {
    enum job job;
    uint32_t *a, *b;
    size_t n;
    int nt, streams;
    atomic_int ready, go;  /* workers started; the start signal */
};

struct worker {
    struct pass *p;
    int t;
    uint64_t sum, tid;
};

/* Thread t's slice: whole cache lines for the reads; the copy's last thread takes the remainder. */
static void *work(void *arg) {
    struct worker *w = arg;
    struct pass *p = w->p;
    size_t read_chunk = (p->n / (size_t)p->nt) & ~(size_t)1023, chunk = p->n / (size_t)p->nt;
    size_t start = (size_t)w->t * chunk, len = w->t == p->nt - 1 ? p->n - start : chunk;
    atomic_fetch_add(&p->ready, 1);
    while (!atomic_load_explicit(&p->go, memory_order_acquire)) { /* spin: the clock starts on every thread at once */ }
    w->tid = os_thread_id();
    if (p->job == READ) {
        w->sum = sum_streams(p->a + (size_t)w->t * read_chunk, read_chunk, p->streams);
    } else if (p->job == COPY) {
        copy_words(p->b + start, p->a + start, len);
    } else {
        for (size_t i = start; i < start + len; i++) { p->a[i] = (uint32_t)(i & 1023); p->b[i] = 0; }
    }
    return NULL;
}

/* One pass of `job` on nt threads: they are started first and released together, so the time is the
 * slowest slice's, without the threads' creation.  Returns the seconds; *sum and *ran get the words' sum
 * and the number of distinct OS threads that did a slice. */
static double run_pass(struct pass *p, uint64_t *sum, int *ran) {
    static pthread_t th[MAX_THREADS];
    static struct worker ws[MAX_THREADS];
    atomic_store(&p->ready, 0);
    atomic_store(&p->go, 0);
    for (int t = 0; t < p->nt; t++) {
        ws[t] = (struct worker){p, t, 0, 0};
        if (pthread_create(&th[t], NULL, work, &ws[t]) != 0) { fprintf(stderr, "cannot start thread %d\n", t); exit(1); }
    }
    while (atomic_load(&p->ready) < p->nt) { /* wait until every worker waits */ }
    double t0 = now();
    atomic_store_explicit(&p->go, 1, memory_order_release);
    for (int t = 0; t < p->nt; t++) pthread_join(th[t], NULL);
    double dt = now() - t0;
    int distinct = 0;
    for (int t = 0; t < p->nt; t++) {
        int seen = 0;
        for (int u = 0; u < t && !seen; u++) seen = ws[u].tid == ws[t].tid;
        distinct += !seen && ws[t].tid != 0;
        if (sum) *sum += ws[t].sum;
    }
    if (ran) *ran = distinct;
    return dt;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 512;
    int passes = argc > 2 ? atoi(argv[2]) : 5;
    int threads = argc > 3 ? atoi(argv[3]) : 0;
    if (threads <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        threads = online > 0 ? (int)online : 1;
    }
    if (mib < 64 || passes < 1 || passes > 100 || threads > MAX_THREADS) {
        fprintf(stderr, "usage: edgeq-bandwidth [MiB>=64] [passes 1-100] [threads 0-%d]\n", MAX_THREADS);
        return 2;
    }
    size_t n = mib * 1024 * 1024 / sizeof(uint32_t);
    uint32_t *a = aligned_alloc(4096, n * sizeof(uint32_t));
    uint32_t *b = aligned_alloc(4096, n * sizeof(uint32_t));
    if (!a || !b) { fprintf(stderr, "cannot allocate %zu MiB\n", 2 * mib); return 1; }
    struct pass p = {.job = INIT, .a = a, .b = b, .n = n, .nt = threads, .streams = 1};
    int ran = 0, fewest = threads;
    run_pass(&p, NULL, &ran);  /* first touch by the thread that reads the slice later */

    static const int stream_counts[] = {1, 2, 4, 8};
    double best_read = 0, best_copy = 0, samples[4][100];
    int best_streams = 1;
    uint64_t sink = 0;
    size_t read_words = ((n / (size_t)threads) & ~(size_t)1023) * (size_t)threads;
    /* Passes go in rounds over the configurations, so the VM's drift hits each alike. */
    for (int r = 0; r < passes; r++) {
        for (int c = 0; c < 4; c++) {
            p.job = READ;
            p.streams = stream_counts[c];
            double dt = run_pass(&p, &sink, &ran);
            if (ran < fewest) fewest = ran;
            double bw = read_words * sizeof(uint32_t) / dt;
            samples[c][r] = bw;
            if (bw > best_read) { best_read = bw; best_streams = p.streams; }
        }
        p.job = COPY;
        double dt = run_pass(&p, NULL, &ran);
        if (ran < fewest) fewest = ran;
        if (2.0 * n * sizeof(uint32_t) / dt > best_copy) best_copy = 2.0 * n * sizeof(uint32_t) / dt;
    }
    int bi = best_streams == 1 ? 0 : best_streams == 2 ? 1 : best_streams == 4 ? 2 : 3;
    printf("{\"read_gbps\": %.2f, \"copy_gbps\": %.2f, \"streams\": %d, \"read_samples_gbps\": [",
           best_read / 1e9, best_copy / 1e9, best_streams);
    for (int r = 0; r < passes; r++) printf("%s%.2f", r ? ", " : "", samples[bi][r] / 1e9);
    printf("], \"bytes\": %zu, \"threads\": %d, \"threads_ran\": %d, \"passes\": %d, \"check\": %d}\n",
           n * sizeof(uint32_t), threads, fewest, passes, sink > 0);
    free(a); free(b);
    return 0;
}
