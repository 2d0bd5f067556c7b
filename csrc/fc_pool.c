/* fc_pool.c: the threads of the recurrent loops (see fastcells.h, "threads").
 *
 * One process-wide pool of workers, started on first use and kept, sleeping, between runs. A
 * run executes task(ctx, tid, team) on the caller (tid 0) and team - 1 workers (nth - 1 asked
 * for, fewer when some come late: see below), which meet at fc_barrier between the phases of
 * each time step. One run at a time: a caller that finds the pool busy (another Python thread
 * inside a kernel) runs its task alone, with the same result, since the kernels' results do
 * not depend on the number of threads.
 *
 * Waiting: a worker spins up to 1 ms for the next run (kernels call back to back) and then sleeps
 * on a condition variable, so an idle pool takes no CPU from BLAS or the user's threads. In a
 * barrier, threads spin (a step takes microseconds), yielding the core after a while in case
 * the machine is oversubscribed. After fork() the child starts with an empty pool.
 *
 * Late workers. Waking a sleeping worker is the host's business in a virtual machine: measured
 * here, a run's first barrier waited a median 29 us for the worker after a 2 ms idle spell,
 * 71 us after 5 ms and 1.8 ms (p90 5.8 ms) after 50 ms, against 1 us back to back. So a run
 * does not wait for its workers beyond its `patience`: each worker checks in on the run's roster
 * as it arrives and takes the next thread id; the caller waits until all have checked in or
 * `patience` ns have passed, then closes the roster, and the run's team is the caller and the
 * workers in it. A worker that comes later sits the run out (it then spins, ready for the next
 * one). Results do not depend on the team, as on the number of threads. Waking costs the caller
 * too (10-50 us for the broadcast after an idle spell here), so a run wakes sleeping workers
 * only when its patience could cover their wake-up, or when runs come in a burst; a short run
 * after an idle spell just runs on whoever is awake, often the caller alone.
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
/* A run wakes sleeping workers if it would wait this long for them (see fc_parallel) */
#define FC_WAKE_PATIENCE_NS 50000LL
#define FC_MAX_PATIENCE_NS 60000000000LL /* a minute */

static inline void fc_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* The i-th turn of a wait for another thread: a pause, or after FC_BARRIER_SPINS of them, in
 * case the machine is oversubscribed, the core to whoever needs it. */
static inline void fc_wait(long i)
{
    if (i < FC_BARRIER_SPINS)
        fc_pause();
    else
        sched_yield();
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
    atomic_ullong roster;     /* the run's: generation << 32 | FC_ROSTER_CLOSED | check-ins */
    atomic_int want;          /* workers the run asks for */
    atomic_int sleeping;      /* workers waiting on `wake` */
    long long last_end_ns;    /* when the last run, or fc_pool_ready call, ended (run_lock) */
    atomic_llong wakes;       /* broadcasts to sleeping workers, ever (fc_pool_stats) */
    atomic_llong short_runs;  /* runs with fewer workers than they asked for, ever */
    atomic_int team_limit;    /* workers a run takes at most, -1: no limit (fc_pool_limit) */
    atomic_int finished;      /* workers of the run's team done with it */
    fc_task task;
    void *ctx;
    atomic_int barrier_count;
    atomic_uint barrier_generation;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
            .team_limit = -1};

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

#define FC_ROSTER_CLOSED (1ull << 31)
#define FC_ROSTER_COUNT(r) ((int)((r) & (FC_ROSTER_CLOSED - 1)))

/* A worker that has seen run g start: its thread id in the run's team (1, 2, ...), or 0 when it
 * is not in it (the roster is closed, full, or already another run's). */
static int pool_check_in(unsigned g)
{
    unsigned long long r = atomic_load_explicit(&pool.roster, memory_order_acquire);
    for (;;) {
        int want = atomic_load_explicit(&pool.want, memory_order_relaxed);
        if ((unsigned)(r >> 32) != g || (r & FC_ROSTER_CLOSED) || FC_ROSTER_COUNT(r) >= want)
            return 0;
        if (atomic_compare_exchange_weak_explicit(&pool.roster, &r, r + 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            return FC_ROSTER_COUNT(r) + 1;
    }
}

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
    atomic_store(&pool.sleeping, 0);
}

static void pool_init(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork_child);
}

static void *pool_worker(void *arg)
{
    unsigned seen = start_generation[(intptr_t)arg];
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
            atomic_fetch_add_explicit(&pool.sleeping, 1, memory_order_relaxed);
            while ((g = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            atomic_fetch_sub_explicit(&pool.sleeping, 1, memory_order_relaxed);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = g;
        int id = pool_check_in(g);
        if (id == 0)
            continue;
        unsigned long long r; /* the team is known once the caller closes the roster */
        for (long i = 0; !((r = atomic_load_explicit(&pool.roster, memory_order_acquire)) &
                           FC_ROSTER_CLOSED);
             i++)
            fc_wait(i);
        pool.task(pool.ctx, id, 1 + FC_ROSTER_COUNT(r));
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

/* Whether runs come in a burst: the last run, or fc_pool_ready call, ended less than a worker's
 * idle spin ago (under run_lock). */
static int pool_burst(void)
{
    return fc_now_ns() - pool.last_end_ns < FC_IDLE_SPIN_NS;
}

/* Start generation g + 1 with the given roster flags (0: open; FC_ROSTER_CLOSED: nobody can
 * join), waking the sleeping workers if `wake` (the awake, spinning ones see it either way).
 * Under run_lock. */
static void pool_publish(unsigned long long flags, int wake)
{
    unsigned g = atomic_load_explicit(&pool.generation, memory_order_relaxed) + 1;
    atomic_store_explicit(&pool.roster, (unsigned long long)g << 32 | flags,
                          memory_order_relaxed);
    if (!wake) {
        atomic_store_explicit(&pool.generation, g, memory_order_release);
        return;
    }
    atomic_fetch_add_explicit(&pool.wakes, 1, memory_order_relaxed);
    pthread_mutex_lock(&pool.lock);
    atomic_store_explicit(&pool.generation, g, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
}

/* Publish a run of task on up to `want` workers and wait for them to check in, `patience_ns`
 * at most (the clock every ~2 us); wake the sleeping ones first if `wake`. Returns the workers
 * in the run's team. */
static int pool_start(fc_task task, void *ctx, int want, int wake, long long patience_ns)
{
    pool.task = task;
    pool.ctx = ctx;
    atomic_store_explicit(&pool.want, want, memory_order_relaxed);
    atomic_store_explicit(&pool.finished, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.barrier_count, 0, memory_order_relaxed);
    pool_publish(0, wake);
    if (patience_ns > FC_MAX_PATIENCE_NS) /* and no overflow below */
        patience_ns = FC_MAX_PATIENCE_NS;
    long long deadline = fc_now_ns() + (patience_ns > 0 ? patience_ns : 0);
    unsigned long long r = atomic_load_explicit(&pool.roster, memory_order_acquire);
    for (int i = 1; FC_ROSTER_COUNT(r) < want; i++) {
        if (i % 64 == 0 && fc_now_ns() > deadline) {
            if (atomic_compare_exchange_strong_explicit(&pool.roster, &r, r | FC_ROSTER_CLOSED,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire))
                return FC_ROSTER_COUNT(r);
            continue; /* a worker checked in meanwhile: r is the new roster */
        }
        fc_wait(i);
        r = atomic_load_explicit(&pool.roster, memory_order_acquire);
    }
    /* all in: no worker changes a full roster */
    atomic_store_explicit(&pool.roster, r | FC_ROSTER_CLOSED, memory_order_release);
    return FC_ROSTER_COUNT(r);
}

int fc_parallel(int nth, fc_task task, void *ctx, long long patience_ns)
{
    if (nth <= 1) {
        task(ctx, 0, 1);
        return 1;
    }
    pthread_once(&pool_once, pool_init);
    if (pthread_mutex_trylock(&pool.run_lock) != 0) { /* another run is in progress */
        task(ctx, 0, 1);
        return 1;
    }
    int workers = pool_grow(nth - 1), want = nth - 1 < workers ? nth - 1 : workers;
    int limit = atomic_load_explicit(&pool.team_limit, memory_order_relaxed);
    if (limit >= 0 && want > limit)
        want = limit;
    int asleep = atomic_load_explicit(&pool.sleeping, memory_order_relaxed);
    /* Sleeping workers are woken for a run that can wait for them, or in a burst (woken now,
     * they are there for the next run). Otherwise the wake-up alone costs the caller 10-50 us
     * here, for workers that would come too late anyway. */
    int wake = asleep > 0 && (patience_ns >= FC_WAKE_PATIENCE_NS || pool_burst());
    int team = 0;
    if (want > 0 && (wake || asleep < workers))
        team = pool_start(task, ctx, want, wake, patience_ns);
    if (team < want)
        atomic_fetch_add_explicit(&pool.short_runs, 1, memory_order_relaxed);
    task(ctx, 0, 1 + team);
    while (atomic_load_explicit(&pool.finished, memory_order_acquire) < team)
        fc_pause();
    pool.last_end_ns = fc_now_ns();
    pthread_mutex_unlock(&pool.run_lock);
    return 1 + team;
}

int fc_pool_ready(long long patience_ns)
{
    if (pthread_mutex_trylock(&pool.run_lock) != 0) /* busy: a run now would go alone */
        return 0;
    int asleep = atomic_load_explicit(&pool.sleeping, memory_order_relaxed);
    int ready = pool.workers == 0 || asleep < pool.workers || patience_ns >= FC_WAKE_PATIENCE_NS;
    if (!ready && pool_burst()) /* the second cold call in a burst: wake the workers for the
                                 * calls to come, with a run that nobody can join */
        pool_publish(FC_ROSTER_CLOSED, 1);
    pool.last_end_ns = fc_now_ns();
    pthread_mutex_unlock(&pool.run_lock);
    return ready;
}

void fc_pool_stats(int *workers, int *sleeping, long long *wakes, long long *short_runs)
{
    pthread_mutex_lock(&pool.run_lock); /* pool.workers changes under it */
    *workers = pool.workers;
    *sleeping = atomic_load_explicit(&pool.sleeping, memory_order_relaxed);
    *wakes = atomic_load_explicit(&pool.wakes, memory_order_relaxed);
    *short_runs = atomic_load_explicit(&pool.short_runs, memory_order_relaxed);
    pthread_mutex_unlock(&pool.run_lock);
}

void fc_pool_limit(int max_workers)
{
    atomic_store_explicit(&pool.team_limit, max_workers < 0 ? -1 : max_workers,
                          memory_order_relaxed);
}

/* fc_round_trip_ns: the caller and one worker pass a cache line back and forth, once both are
 * running (the barrier first: the wake-up of a sleeping worker is not timed), in bursts of
 * FC_PING_BURST trips; the result is the median of the bursts' means, so that a burst in which
 * the host paused a vCPU does not count. It stops after `trips` trips or FC_PING_MAX_NS, even
 * within a burst: for milliseconds after an idle spell, a trip here took ~1 ms instead of 60 ns
 * (as if the host ran both vCPUs on one core), and the measure should not cost that long (a
 * burst cut short counts as the time it took over the trips it had). A worker that does not
 * come within FC_PING_MAX_NS (asleep, and slow to wake) gets a second chance of
 * FC_PING_RETRY_NS; after that the result is unknown (-1). */
#define FC_PING_BURST 8
#define FC_PING_MAX_BURSTS 64
#define FC_PING_MAX_NS 200000LL
#define FC_PING_RETRY_NS 1000000LL
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
    /* The first try wakes a sleeping worker, which is often too slow for it; the second finds
     * it awake (a result kept for a second should not depend on how long the pool slept). */
    if (fc_parallel(2, fc_ping_task, &p, FC_PING_MAX_NS) != 2 &&
        fc_parallel(2, fc_ping_task, &p, FC_PING_RETRY_NS) != 2)
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
         i++)
        fc_wait(i);
}
