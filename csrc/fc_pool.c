/* fc_pool.c: the threads of the recurrent loops (see fastcells.h, "threads").
 *
 * One process-wide pool of workers, started on first use and kept, sleeping, between runs. A
 * run executes task(ctx, tid, nth) on the caller (tid 0) and nth - 1 workers, which meet at
 * fc_barrier between the phases of each time step. One run at a time: a caller that finds the
 * pool busy (another Python thread inside a kernel) runs its task alone, with the same result,
 * since the kernels' results do not depend on the number of threads.
 *
 * Waiting: a worker spins up to 1 ms for the next run (kernels call back to back) and then sleeps
 * on a condition variable, so an idle pool takes no CPU from BLAS or the user's threads. In a
 * barrier, threads spin (a step takes microseconds), yielding the core after a while in case
 * the machine is oversubscribed. After fork() the child starts with an empty pool.
 */
#include "fastcells.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define FC_MAX_WORKERS 255
/* How long an idle worker spins for the next run before it sleeps, by the clock: a pause takes
 * ~26 ns on one CPU here and ~40 ns on another, so a count of them is no duration. The gap
 * between two back-to-back kernel calls (their Python layer: checks, allocation, the caller's
 * loop) is tens of microseconds; a worker that sleeps through it must be woken (a futex, and in
 * a virtual machine the host's wake-up of an idle vCPU), which was measured at up to the time of
 * the call itself: a 16x25x64x128 LSTM inference on 2 threads took 1.01 ms (median) with a spin
 * of 2000 pauses (~52 us here), 0.63 ms with ten times that, against 0.93 ms on one thread. */
#define FC_IDLE_SPIN_NS 1000000LL
#define FC_BARRIER_SPINS 20000   /* pauses (0.5-0.8 ms) in a barrier, then sched_yield */

static inline void fc_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline long long fc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct {
    pthread_mutex_t run_lock; /* held for the whole of a run */
    pthread_mutex_t lock;     /* with wake: sleeping workers */
    pthread_cond_t wake;
    int workers;              /* started */
    atomic_uint generation;   /* bumped to start a run */
    atomic_int finished;      /* workers done with the current run */
    fc_task task;
    void *ctx;
    int nth;
    atomic_int barrier_count;
    atomic_uint barrier_generation;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* The generation each worker waits past first: the pool's at its start (runs only begin, and
 * the generation only moves, under run_lock, which pool_grow's caller holds). */
static unsigned start_generation[FC_MAX_WORKERS + 1];

static void pool_after_fork_child(void)
{
    /* the workers did not survive the fork: forget them */
    pthread_mutex_init(&pool.run_lock, NULL);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pool.workers = 0;
}

static void pool_init(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork_child);
}

static void *pool_worker(void *arg)
{
    int tid = (int)(intptr_t)arg;
    unsigned seen = start_generation[tid];
    for (;;) {
        unsigned g = seen;
        long long deadline = fc_now_ns() + FC_IDLE_SPIN_NS;
        for (int i = 1;; i++) {
            g = atomic_load_explicit(&pool.generation, memory_order_acquire);
            if (g != seen)
                break;
            fc_pause();
            if (i % 64 == 0 && fc_now_ns() > deadline) /* the clock every ~2 us */
                break;
        }
        if (g == seen) {
            pthread_mutex_lock(&pool.lock);
            while ((g = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = g;
        if (tid < pool.nth)
            pool.task(pool.ctx, tid, pool.nth);
        atomic_fetch_add_explicit(&pool.finished, 1, memory_order_release);
    }
    return NULL;
}

/* Start workers until there are `want`; returns how many there are. */
static int pool_grow(int want)
{
    if (want > FC_MAX_WORKERS)
        want = FC_MAX_WORKERS;
    while (pool.workers < want) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        start_generation[pool.workers + 1] =
            atomic_load_explicit(&pool.generation, memory_order_relaxed);
        int failed = pthread_create(&thread, &attr, pool_worker,
                                    (void *)(intptr_t)(pool.workers + 1));
        pthread_attr_destroy(&attr);
        if (failed)
            break;
        pool.workers++;
    }
    return pool.workers;
}

int fc_parallel(int nth, fc_task task, void *ctx)
{
    if (nth > 1) {
        pthread_once(&pool_once, pool_init);
        if (pthread_mutex_trylock(&pool.run_lock) == 0) {
            int workers = pool_grow(nth - 1);
            if (nth > workers + 1)
                nth = workers + 1;
            if (nth > 1) {
                pool.task = task;
                pool.ctx = ctx;
                pool.nth = nth;
                atomic_store_explicit(&pool.finished, 0, memory_order_relaxed);
                atomic_store_explicit(&pool.barrier_count, 0, memory_order_relaxed);
                pthread_mutex_lock(&pool.lock);
                atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
                pthread_cond_broadcast(&pool.wake);
                pthread_mutex_unlock(&pool.lock);
                task(ctx, 0, nth);
                while (atomic_load_explicit(&pool.finished, memory_order_acquire) < workers)
                    fc_pause();
                pthread_mutex_unlock(&pool.run_lock);
                return nth;
            }
            pthread_mutex_unlock(&pool.run_lock);
        }
    }
    task(ctx, 0, 1);
    return 1;
}

/* fc_round_trip_ns: the caller and one worker pass a cache line back and forth, once both are
 * running (the barrier first: the wake-up of a sleeping worker is not timed), in bursts of
 * FC_PING_BURST trips; the result is the median of the bursts' means, so that a burst in which
 * the host paused a vCPU does not count. It stops after `trips` trips or FC_PING_MAX_NS, even
 * within a burst: for milliseconds after an idle spell, a trip here took ~1 ms instead of 60 ns
 * (as if the host ran both vCPUs on one core), and the measure should not cost that long (a
 * burst cut short counts as the time it took over the trips it had). */
#define FC_PING_BURST 8
#define FC_PING_MAX_BURSTS 64
#define FC_PING_MAX_NS 200000LL
struct fc_ping {
    _Alignas(64) atomic_int ball;
    atomic_int stop;
    int bursts;
    long long burst_ns[FC_PING_MAX_BURSTS];
};

static int fc_ping_compare(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static void fc_ping_task(void *ctx, int tid, int nth)
{
    struct fc_ping *p = ctx;
    if (nth < 2) /* run alone (fc_parallel found the pool busy): nothing to measure */
        return;
    fc_barrier(nth);
    if (tid == 0) {
        long long start = fc_now_ns(), t = start;
        int n = 0, late = 0;
        for (int b = 0; b < p->bursts && !late; b++) {
            long long t0 = t;
            int i = 0;
            for (; i < FC_PING_BURST && !late; i++) {
                int k = b * FC_PING_BURST + i;
                atomic_store_explicit(&p->ball, 2 * k + 1, memory_order_release);
                for (int w = 1; atomic_load_explicit(&p->ball, memory_order_acquire) != 2 * k + 2;
                     w++) {
                    fc_pause();
                    if (w % 1024 == 0 && fc_now_ns() - start > FC_PING_MAX_NS) {
                        late = 1;
                        break;
                    }
                }
            }
            t = fc_now_ns();
            p->burst_ns[n++] = (t - t0) / i;
            late |= t - start > FC_PING_MAX_NS;
        }
        p->bursts = n;
        atomic_store_explicit(&p->stop, 1, memory_order_release);
    } else if (tid == 1) {
        for (int k = 0;; k++) { /* answer each throw until the caller stops */
            while (atomic_load_explicit(&p->ball, memory_order_acquire) != 2 * k + 1) {
                if (atomic_load_explicit(&p->stop, memory_order_acquire))
                    return;
                fc_pause();
            }
            atomic_store_explicit(&p->ball, 2 * k + 2, memory_order_release);
        }
    }
}

long long fc_round_trip_ns(int trips)
{
    struct fc_ping p;
    atomic_init(&p.ball, 0);
    atomic_init(&p.stop, 0);
    p.bursts = trips / FC_PING_BURST < 1 ? 1 : trips / FC_PING_BURST;
    if (p.bursts > FC_PING_MAX_BURSTS)
        p.bursts = FC_PING_MAX_BURSTS;
    if (fc_parallel(2, fc_ping_task, &p) != 2)
        return -1;
    qsort(p.burst_ns, (size_t)p.bursts, sizeof p.burst_ns[0], fc_ping_compare);
    return p.burst_ns[p.bursts / 2];
}

void fc_barrier(int nth)
{
    if (nth <= 1)
        return;
    unsigned g = atomic_load_explicit(&pool.barrier_generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&pool.barrier_count, 1, memory_order_acq_rel) == nth - 1) {
        atomic_store_explicit(&pool.barrier_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&pool.barrier_generation, 1, memory_order_release);
        return;
    }
    for (long i = 0; atomic_load_explicit(&pool.barrier_generation, memory_order_acquire) == g;
         i++) {
        if (i < FC_BARRIER_SPINS)
            fc_pause();
        else
            sched_yield();
    }
}
