/* tokensat onboard scheduler: which queued jobs run this tick, and at which power level.
 *
 * Portable C11, no Python, no allocation: a pure function over plain structs the caller owns.
 * tk_sched_init checks a configuration once into a tk_sched (a plain struct; put it anywhere);
 * tk_sched_decide reads the job table, energy and thermal state and writes one tk_sched_decision.
 * Same inputs give the same bytes of output: every job's sort key is computed on its own (no
 * sums whose order depends on the array), and the order is total (job ids break every tie), so
 * the batch does not depend on where the jobs sit in the array either.
 *
 * The rules, in the order the decision applies them:
 *
 * 1. Jobs. A job is runnable when tokens_remaining > 0. Its effective priority is
 *        eff = priority + aging_per_s * max(0, now - arrival)  (+ hysteresis if running)
 *    and the batch is the best n_batch runnable jobs by (eff descending, deadline ascending with
 *    "none" last, id ascending): one pass keeping the best n_batch in a small heap (worst kept
 *    job at the root, so most jobs cost one comparison), O(N log n_batch) at worst, then the
 *    kept few sorted best first; no sort of the whole table. Every job ages at the same rate,
 *    so a job that has waited (p_max - p) / aging_per_s longer than another outranks it
 *    whatever their priorities: a stream of newer high-priority jobs cannot starve an old one
 *    (aging_per_s = 0 turns aging, and that guarantee, off). The hysteresis bonus of running
 *    jobs keeps a job in the batch until a waiting one beats it by more than `hysteresis`, so
 *    near-equal jobs do not swap places every tick (each swap costs the engine a prefill).
 *    Preemption is only ever at a token boundary: the decision merely names the batch; the
 *    executive applies it between two decode steps (a job leaving the batch keeps what it has
 *    generated and resumes later; a job joining is prefilled before the next step).
 *
 * 2. Thermal. temperature >= limit: idle (TK_SCHED_IDLE_THERMAL). Inside the margin below the
 *    limit, compute power is capped by linear interpolation from the highest level's watts (at
 *    limit - margin) down to the lowest level's (at the limit); levels drawing more are not
 *    allowed (TK_SCHED_THROTTLED_THERMAL). The lowest level is allowed below the limit.
 *
 * 3. Energy. For each power level the battery state of charge is projected over the horizon,
 *    piecewise linear, from: solar input only while sunlit, the base load always, and compute at
 *    the level's watts for as long as the queued work lasts at the level's tokens/s (the sum of
 *    tokens_remaining of every runnable job, capped at the horizon; where the engine runs
 *    slower than the level's rate, compute lasts longer than planned, and the next tick plans
 *    again with the work then left). The battery never holds
 *    more than its capacity (surplus solar is shed), so a full battery does not "bank" energy it
 *    cannot store. A level is allowed when the projected charge stays >= floor over the whole
 *    horizon (its minimum is at a breakpoint, so breakpoints are all that is evaluated). The
 *    chosen level is the highest allowed by both rules; none: idle (TK_SCHED_IDLE_ENERGY_FLOOR).
 *    Horizon: max(horizon_min_s, time to the next eclipse exit). When an eclipse is coming the
 *    plan therefore runs through its end, so compute is never bought with the charge the node
 *    needs to get through the dark; in eclipse it runs to sunrise. Past the eclipse times it
 *    is given, the plan counts sun: a horizon_min_s reaching beyond the exit into the following
 *    eclipse would overrate the charge, so keep horizon_min_s below a sunlit arc (LEO: ~1 h).
 *    Eclipse times, as flight/sensors reports them: while sunlit, 0 <= entry <= exit (dark on
 *    [entry, exit)); in eclipse, dark on [0, exit), then sunlit, dark again from entry only if
 *    entry > exit (the sensors report entry 0 in eclipse: no later entry known). +inf means
 *    "not ahead". solar_w is the arrays' input while sunlit: in eclipse the measured input is
 *    0, so pass the last sunlit (or nominal) value; 0 is conservative (no recharge counted).
 *
 * Power levels (e.g. the Jetson's nvpmodel modes) are listed lowest first: watts and tokens/s
 * both strictly increasing, so "higher level" means both more power and more throughput. The
 * decision reports the chosen level's tokens/s; in the `sim` backend the engine's throughput is
 * capped at it (the engine applies the cap, not this file).
 *
 * Conventions as in tk_engine.h: int status (TK_OK = 0), one line naming the problem in the
 * scheduler's `err` buffer on failure. A failure leaves the decision zeroed: level -1, no batch.
 */
#ifndef TK_SCHED_H
#define TK_SCHED_H

#include <stdint.h>

#ifndef TK_OK /* the same values as tk_engine.h, which this file does not need */
#define TK_OK 0
#define TK_ERR (-1)
#define TK_ERR_LEN 256
#endif

#define TK_SCHED_MAX_LEVELS 16  /* power-level table entries */
#define TK_SCHED_MAX_BATCH 64   /* jobs in one batch (the engine's n_batch) */
#define TK_SCHED_MAX_JOBS 1000000

/* The reason codes, one table: code, name (as TK_SCHED_<name>), one-line meaning. */
#define TK_SCHED_REASONS(X)                                                                        \
    X(RUN, "running at the highest power level")                                                  \
    X(IDLE_NO_JOBS, "idle: no job has tokens remaining")                                          \
    X(IDLE_THERMAL, "idle: temperature at or above its limit")                                    \
    X(IDLE_ENERGY_FLOOR, "idle: every power level would take the battery below its floor")       \
    X(THROTTLED_ENERGY, "running below the highest level: a higher one would cross the floor")   \
    X(THROTTLED_THERMAL, "running below the highest level energy allows: near the thermal limit")

enum tk_sched_reason {
#define TK_SCHED_ENUM(name, text) TK_SCHED_##name,
    TK_SCHED_REASONS(TK_SCHED_ENUM)
#undef TK_SCHED_ENUM
    TK_SCHED_N_REASONS
};

/* One row of the job table. The table is the caller's; the scheduler only reads it. */
typedef struct {
    double   arrival_s;        /* onboard time the job was queued, s (finite) */
    double   deadline_s;       /* onboard time it is due, s; 0 = no deadline (sorts last) */
    uint32_t id;               /* job id, unique in the table (the last tie-break) */
    int32_t  priority;         /* higher runs first; small integers */
    int32_t  tokens_remaining; /* tokens still to generate, >= 0; 0 = finished, never chosen */
    int32_t  tokens_done;      /* tokens generated so far, >= 0 (housekeeping; not a rule input) */
    int32_t  running;          /* 1 = in the current batch (gets the hysteresis bonus), 0 = not */
} tk_sched_job;

/* Energy state, from the power system and the sensor backend's orbit model. */
typedef struct {
    double soc_wh;         /* battery state of charge, Wh (>= 0; above capacity reads as full) */
    double capacity_wh;    /* battery capacity, Wh (> 0) */
    double floor_wh;       /* never plan below this charge, Wh (0 <= floor <= capacity) */
    double solar_w;        /* solar array input while sunlit, W (>= 0); see the eclipse rule */
    double eclipse_entry_s;/* time to the next eclipse entry, s (>= 0; +inf = none ahead; in
                              eclipse, <= exit = no later entry known) */
    double eclipse_exit_s; /* time to the next eclipse exit, s (>= 0; +inf = none ahead) */
    double base_load_w;    /* everything but compute: bus, radio, heaters, idle board, W (>= 0) */
    int32_t in_eclipse;    /* 1 = in eclipse now, 0 = sunlit */
} tk_sched_energy;

typedef struct {
    double temp_c;         /* board/GPU temperature, C */
    double limit_c;        /* at or above: no compute, C */
    double margin_c;       /* throttle band below the limit, C (>= 0; 0 = no band) */
} tk_sched_thermal;

typedef struct {
    double watts;          /* power drawn by compute at this level, W, on top of the base load */
    double tokens_per_s;   /* aggregate decode throughput at this level, tokens/s (> 0) */
} tk_sched_level;

typedef struct {
    int32_t n_batch;       /* most jobs in a batch, [1, TK_SCHED_MAX_BATCH] */
    double aging_per_s;    /* priority units gained per second of waiting (>= 0) */
    double hysteresis;     /* priority bonus of a job already running (>= 0) */
    double horizon_min_s;  /* shortest planning horizon, s (> 0) */
} tk_sched_params;

/* One entry of the best-so-far array: the sort key and where the job is. */
typedef struct {
    double eff;            /* effective priority (priority units) */
    double deadline;       /* deadline, s; +inf for "none" */
    uint32_t id;           /* job id */
    int32_t index;         /* position in the caller's job array */
} tk_sched_cand;

typedef struct {
    tk_sched_params p;
    int32_t n_levels;                           /* entries in levels, [1, TK_SCHED_MAX_LEVELS] */
    tk_sched_level levels[TK_SCHED_MAX_LEVELS]; /* lowest first */
    tk_sched_cand best[TK_SCHED_MAX_BATCH];     /* scratch: [p.n_batch] the best so far, a heap
                                                   with the worst at [0]; best first at the end */
    char err[TK_ERR_LEN];                       /* one line about the last failure */
} tk_sched;

typedef struct {
    int32_t level;         /* index into the power table; -1 = idle */
    int32_t reason;        /* enum tk_sched_reason */
    int32_t n_batch;       /* jobs in the batch, [0, p.n_batch]; 0 when idle */
    int32_t n_runnable;    /* jobs with tokens_remaining > 0 */
    int32_t n_preempted;   /* runnable running jobs left out of the batch */
    int32_t energy_level;  /* highest level the energy rule allows; -1 = none */
    int32_t thermal_level; /* highest level the thermal rule allows; -1 = none (at the limit) */
    int32_t pad_;          /* zero */
    int64_t work_tokens;   /* sum of tokens_remaining over runnable jobs */
    double horizon_s;      /* planning horizon, s */
    double tokens_per_s;   /* the chosen level's throughput cap, tokens/s; 0 when idle */
    double soc_min_wh;     /* lowest projected charge over the horizon at the chosen level (or
                              idle), Wh */
    double soc_end_wh;     /* projected charge at the end of the horizon, Wh */
    int32_t index[TK_SCHED_MAX_BATCH]; /* [n_batch] the batch's positions in the job array, best
                                          first; the rest zero */
    uint32_t id[TK_SCHED_MAX_BATCH];   /* [n_batch] the batch's job ids, best first; rest zero */
} tk_sched_decision;

/* Check and copy the configuration into s. levels[n_levels] lowest first. */
int tk_sched_init(tk_sched *s, const tk_sched_params *p, const tk_sched_level *levels,
                  int n_levels);
/* Decide one tick at onboard time now_s over jobs[n_jobs] (n_jobs may be 0). */
int tk_sched_decide(tk_sched *s, double now_s, const tk_sched_job *jobs, int n_jobs,
                    const tk_sched_energy *e, const tk_sched_thermal *t, tk_sched_decision *out);
/* Project the charge over horizon_s with compute at watts for compute_s seconds: writes the
 * minimum and final charge (Wh). The energy rule's model, exposed so it can be checked alone. */
void tk_sched_project(const tk_sched_energy *e, double horizon_s, double watts, double compute_s,
                      double *soc_min_wh, double *soc_end_wh);
const char *tk_sched_reason_name(int reason);  /* "RUN", ...; NULL when out of range */
const char *tk_sched_reason_text(int reason);  /* the one-line meaning; NULL when out of range */

#endif /* TK_SCHED_H */
