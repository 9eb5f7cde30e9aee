/* Persistent worker pool. The caller is thread 0; n-1 workers live for the model's lifetime.
 *
 * A forward pass is one parallel region (tk_pool_run) with ~10 barriers per layer, so both the
 * start of a region and the barrier spin: a futex round-trip per barrier would cost more than
 * a small matmul. Workers that see no work for a while sleep on a condition variable, so an
 * idle node does not burn power spinning.
 */
#define _GNU_SOURCE
#include "tk_internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

#define SPIN_BEFORE_SLEEP 200000 /* ~ a millisecond of polling between tokens */
#define SPIN_BEFORE_YIELD 2000    /* in a barrier: beyond this the other thread was likely
                                     descheduled (more threads than free cores), so give it
                                     the core instead of burning our time slice */

static void backoff(unsigned *spins) {
    if (++*spins < SPIN_BEFORE_YIELD) cpu_relax();
    else sched_yield();
}

struct tk_pool {
    int n;
    pthread_t *threads;               /* [n - 1] */
    tk_task_fn fn;
    void *arg;
    atomic_uint job;                  /* generation of the current job */
    atomic_int pending;               /* workers still running the current job */
    atomic_int quit;
    atomic_int sleepers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* sense-reversing barrier */
    atomic_int bar_count;
    atomic_uint bar_gen;
    int started;                      /* workers created (for cleanup after partial init) */
};

double tk_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct { tk_pool *p; int tid; } worker_arg;

static void *worker_main(void *v) {
    tk_pool *p = ((worker_arg *)v)->p;
    int tid = ((worker_arg *)v)->tid;
    free(v);
    unsigned seen = 0;
    for (;;) {
        unsigned job;
        int spins = 0;
        while ((job = atomic_load_explicit(&p->job, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->quit, memory_order_acquire)) {
            if (++spins < SPIN_BEFORE_SLEEP) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->job) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load_explicit(&p->quit, memory_order_acquire)) return NULL;
        seen = job;
        p->fn(p->arg, tid);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

int tk_pool_new(tk_pool **out, int n_threads) {
    tk_pool *p = calloc(1, sizeof *p);
    if (!p) return TK_ERR;
    p->n = n_threads;
    atomic_init(&p->job, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->quit, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->bar_count, 0);
    atomic_init(&p->bar_gen, 0);
    if (pthread_mutex_init(&p->mu, NULL) != 0 || pthread_cond_init(&p->cv, NULL) != 0) {
        free(p);
        return TK_ERR;
    }
    p->threads = calloc(n_threads > 1 ? (size_t)n_threads - 1 : 1, sizeof *p->threads);
    if (!p->threads) {
        tk_pool_free(p);
        return TK_ERR;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) {
            tk_pool_free(p);
            return TK_ERR;
        }
        a->p = p;
        a->tid = i;
        if (pthread_create(&p->threads[i - 1], NULL, worker_main, a) != 0) {
            free(a);
            tk_pool_free(p);
            return TK_ERR;
        }
        p->started++;
    }
    *out = p;
    return TK_OK;
}

void tk_pool_free(tk_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int tk_pool_size(const tk_pool *p) { return p->n; }

void tk_pool_run(tk_pool *p, tk_task_fn fn, void *arg) {
    if (p->n == 1) {
        fn(arg, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    /* seq_cst on both sides (job here, sleepers in the worker) so a worker going to sleep
     * either sees the new job or is seen as a sleeper and woken */
    atomic_fetch_add(&p->job, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0);
    unsigned spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) backoff(&spins);
}

void tk_pool_barrier(tk_pool *p) {
    if (p->n == 1) return;
    unsigned gen = atomic_load_explicit(&p->bar_gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == p->n - 1) {
        atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->bar_gen, 1, memory_order_release);
    } else {
        unsigned spins = 0;
        while (atomic_load_explicit(&p->bar_gen, memory_order_acquire) == gen) backoff(&spins);
    }
}
