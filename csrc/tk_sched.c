/* The onboard scheduler's decision: one pass over the job table for the batch, then the thermal
 * cap, then the energy projection of every power level. The rules are stated in tk_sched.h. */
#include "tk_sched.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const reason_names[TK_SCHED_N_REASONS] = {
#define TK_SCHED_NAME(name, text) #name,
    TK_SCHED_REASONS(TK_SCHED_NAME)
#undef TK_SCHED_NAME
};

static const char *const reason_texts[TK_SCHED_N_REASONS] = {
#define TK_SCHED_TEXT(name, text) text,
    TK_SCHED_REASONS(TK_SCHED_TEXT)
#undef TK_SCHED_TEXT
};

const char *tk_sched_reason_name(int reason) {
    return reason >= 0 && reason < TK_SCHED_N_REASONS ? reason_names[reason] : NULL;
}

const char *tk_sched_reason_text(int reason) {
    return reason >= 0 && reason < TK_SCHED_N_REASONS ? reason_texts[reason] : NULL;
}

static int fail(tk_sched *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, TK_ERR_LEN, fmt, ap);
    va_end(ap);
    return TK_ERR;
}

/* ----------------------------------------------------------------------------------------- */
/* Configuration */

int tk_sched_init(tk_sched *s, const tk_sched_params *p, const tk_sched_level *levels,
                  int n_levels) {
    memset(s, 0, sizeof *s);
    if (p->n_batch < 1 || p->n_batch > TK_SCHED_MAX_BATCH)
        return fail(s, "n_batch %d is outside [1, %d]", (int)p->n_batch, TK_SCHED_MAX_BATCH);
    if (!(isfinite(p->aging_per_s) && p->aging_per_s >= 0.0))
        return fail(s, "aging_per_s %g is not a finite number >= 0", p->aging_per_s);
    if (!(isfinite(p->hysteresis) && p->hysteresis >= 0.0))
        return fail(s, "hysteresis %g is not a finite number >= 0", p->hysteresis);
    if (!(isfinite(p->horizon_min_s) && p->horizon_min_s > 0.0))
        return fail(s, "horizon_min_s %g is not a finite number > 0", p->horizon_min_s);
    if (n_levels < 1 || n_levels > TK_SCHED_MAX_LEVELS)
        return fail(s, "%d power levels; between 1 and %d are needed", n_levels,
                    TK_SCHED_MAX_LEVELS);
    if (levels == NULL) return fail(s, "power level table is NULL");
    for (int i = 0; i < n_levels; i++) {
        const tk_sched_level *l = &levels[i];
        if (!(isfinite(l->watts) && l->watts >= 0.0))
            return fail(s, "power level %d: watts %g is not a finite number >= 0", i, l->watts);
        if (!(isfinite(l->tokens_per_s) && l->tokens_per_s > 0.0))
            return fail(s, "power level %d: tokens_per_s %g is not a finite number > 0", i,
                        l->tokens_per_s);
        const tk_sched_level *below = &levels[i > 0 ? i - 1 : 0];
        if (i > 0 && !(l->watts > below->watts && l->tokens_per_s > below->tokens_per_s))
            return fail(s, "power level %d: watts and tokens_per_s must both exceed level %d's "
                        "(list levels lowest first)", i, i - 1);
    }
    s->p = *p;
    s->n_levels = n_levels;
    memcpy(s->levels, levels, (size_t)n_levels * sizeof *levels);
    return TK_OK;
}

/* ----------------------------------------------------------------------------------------- */
/* Energy projection */

/* Sunlit at t seconds from now? Sunlit: dark on [entry, exit). In eclipse: dark on [0, exit),
 * and again from entry if a later entry is given (entry > exit). */
static int sunlit_at(const tk_sched_energy *e, double t) {
    if (!e->in_eclipse) return t < e->eclipse_entry_s || t >= e->eclipse_exit_s;
    int dark_again = e->eclipse_entry_s > e->eclipse_exit_s && t >= e->eclipse_entry_s;
    return t >= e->eclipse_exit_s && !dark_again;
}

void tk_sched_project(const tk_sched_energy *e, double horizon_s, double watts, double compute_s,
                      double *soc_min_wh, double *soc_end_wh) {
    /* breakpoints where the net power can change: eclipse entry and exit, end of compute, end
     * of the horizon; each clipped to [0, horizon], put in order by insertion */
    double bp[4] = {e->eclipse_entry_s, e->eclipse_exit_s, compute_s, horizon_s}; /* s */
    for (int i = 0; i < 4; i++) {
        if (!(bp[i] < horizon_s)) bp[i] = horizon_s; /* also +inf */
        if (bp[i] < 0.0) bp[i] = 0.0;
        for (int j = i; j > 0 && bp[j] < bp[j - 1]; j--) {
            double t = bp[j];
            bp[j] = bp[j - 1];
            bp[j - 1] = t;
        }
    }
    double soc = e->soc_wh < e->capacity_wh ? e->soc_wh : e->capacity_wh; /* Wh */
    double lo = soc;                                                        /* Wh */
    double a = 0.0;                                                         /* segment start, s */
    for (int i = 0; i < 4; i++) {
        double b = bp[i]; /* segment end, s */
        if (b <= a) continue;
        /* the net power is constant on [a, b): the charge is linear there, so its minimum over
         * the segment is at one of the ends (capping at capacity keeps that true) */
        double net = -e->base_load_w; /* W */
        if (sunlit_at(e, a)) net += e->solar_w;
        if (a < compute_s) net -= watts;
        soc += net * (b - a) / 3600.0;
        if (soc > e->capacity_wh) soc = e->capacity_wh; /* surplus solar is shed */
        if (soc < lo) lo = soc;
        a = b;
    }
    *soc_min_wh = lo;
    *soc_end_wh = soc;
}

/* ----------------------------------------------------------------------------------------- */
/* The decision */

/* The total order of the batch: effective priority, then earliest deadline, then lowest id. */
static int better(const tk_sched_cand *a, const tk_sched_cand *b) {
    if (a->eff != b->eff) return a->eff > b->eff;
    if (a->deadline != b->deadline) return a->deadline < b->deadline;
    return a->id < b->id;
}

static int check_energy(tk_sched *s, const tk_sched_energy *e) {
    if (!(isfinite(e->capacity_wh) && e->capacity_wh > 0.0))
        return fail(s, "battery capacity %g Wh is not a finite number > 0", e->capacity_wh);
    if (!(isfinite(e->soc_wh) && e->soc_wh >= 0.0))
        return fail(s, "battery charge %g Wh is not a finite number >= 0", e->soc_wh);
    if (!(isfinite(e->floor_wh) && e->floor_wh >= 0.0 && e->floor_wh <= e->capacity_wh))
        return fail(s, "battery floor %g Wh is outside [0, capacity %g]", e->floor_wh,
                    e->capacity_wh);
    if (!(isfinite(e->solar_w) && e->solar_w >= 0.0))
        return fail(s, "solar input %g W is not a finite number >= 0", e->solar_w);
    if (!(isfinite(e->base_load_w) && e->base_load_w >= 0.0))
        return fail(s, "base load %g W is not a finite number >= 0", e->base_load_w);
    if (!(e->eclipse_entry_s >= 0.0) || !(e->eclipse_exit_s >= 0.0)) /* NaN fails too */
        return fail(s, "eclipse entry %g s / exit %g s: each must be >= 0 (or +inf)",
                    e->eclipse_entry_s, e->eclipse_exit_s);
    if (e->in_eclipse != 0 && e->in_eclipse != 1)
        return fail(s, "in_eclipse %d is not 0 or 1", (int)e->in_eclipse);
    if (!e->in_eclipse && e->eclipse_entry_s > e->eclipse_exit_s)
        return fail(s, "sunlit, but the next eclipse exit (%g s) comes before its entry (%g s)",
                    e->eclipse_exit_s, e->eclipse_entry_s);
    return TK_OK;
}

int tk_sched_decide(tk_sched *s, double now_s, const tk_sched_job *jobs, int n_jobs,
                    const tk_sched_energy *e, const tk_sched_thermal *t, tk_sched_decision *out) {
    memset(out, 0, sizeof *out);
    out->level = -1;
    out->energy_level = -1;
    out->thermal_level = -1;
    out->reason = TK_SCHED_IDLE_NO_JOBS;
    if (s->n_levels < 1) return fail(s, "scheduler used before tk_sched_init succeeded");
    if (!isfinite(now_s)) return fail(s, "onboard time %g is not finite", now_s);
    if (n_jobs < 0 || n_jobs > TK_SCHED_MAX_JOBS)
        return fail(s, "%d jobs is outside [0, %d]", n_jobs, TK_SCHED_MAX_JOBS);
    if (n_jobs > 0 && jobs == NULL) return fail(s, "job table is NULL");
    if (check_energy(s, e) != TK_OK) return TK_ERR;
    if (!(isfinite(t->temp_c) && isfinite(t->limit_c)))
        return fail(s, "temperature %g C / limit %g C: not finite", t->temp_c, t->limit_c);
    if (!(isfinite(t->margin_c) && t->margin_c >= 0.0))
        return fail(s, "thermal margin %g C is not a finite number >= 0", t->margin_c);

    /* 1. the batch: one pass keeping the best n_batch runnable jobs in the heap s->best */
    const int nb = s->p.n_batch;
    const double aging = s->p.aging_per_s, hyst = s->p.hysteresis;
    tk_sched_cand *best = s->best; /* [nb] */
    int n_best = 0, n_runnable = 0, n_running = 0;
    int64_t work = 0; /* tokens */
    for (int i = 0; i < n_jobs; i++) {
        const tk_sched_job *j = &jobs[i];
        if (!(isfinite(j->arrival_s) && isfinite(j->deadline_s) && j->deadline_s >= 0.0) ||
            j->tokens_remaining < 0 || j->tokens_done < 0 || (j->running != 0 && j->running != 1))
            return fail(s, "job %u (row %d): arrival %g s, deadline %g s, tokens remaining %d, "
                        "done %d, running %d: need finite times, deadline >= 0, counts >= 0, "
                        "running 0 or 1", (unsigned)j->id, i, j->arrival_s, j->deadline_s,
                        (int)j->tokens_remaining, (int)j->tokens_done, (int)j->running);
        if (j->tokens_remaining == 0) continue;
        n_runnable++;
        n_running += j->running;
        work += j->tokens_remaining;
        double wait = now_s - j->arrival_s; /* s */
        tk_sched_cand c;
        c.eff = (double)j->priority + aging * (wait > 0.0 ? wait : 0.0);
        if (j->running) c.eff += hyst;
        c.deadline = j->deadline_s > 0.0 ? j->deadline_s : INFINITY;
        c.id = j->id;
        c.index = i;
        /* best[] is a heap with the worst kept job at its root: a job that does not beat the
         * root costs one comparison; one that does replaces it in O(log n_batch) */
        if (n_best < nb) {
            int k = n_best++;
            while (k > 0 && better(&best[(k - 1) / 2], &c)) {
                best[k] = best[(k - 1) / 2];
                k = (k - 1) / 2;
            }
            best[k] = c;
        } else if (better(&c, &best[0])) {
            int k = 0;
            for (;;) {
                int w = 2 * k + 1; /* the worse child */
                if (w >= nb) break;
                if (w + 1 < nb && better(&best[w], &best[w + 1])) w++;
                if (!better(&c, &best[w])) break;
                best[k] = best[w];
                k = w;
            }
            best[k] = c;
        }
    }
    /* order the kept jobs best first (insertion sort: n_batch is small) */
    for (int i = 1; i < n_best; i++) {
        tk_sched_cand c = best[i];
        int k = i;
        for (; k > 0 && better(&c, &best[k - 1]); k--) best[k] = best[k - 1];
        best[k] = c;
    }
    out->n_runnable = n_runnable;
    out->work_tokens = work;

    /* 2. thermal: the highest level whose watts fit under the cap */
    const int top = s->n_levels - 1;
    const tk_sched_level *lv = s->levels;
    int thermal_level = -1;
    if (t->temp_c < t->limit_c) {
        thermal_level = top;
        if (t->margin_c > 0.0 && t->temp_c > t->limit_c - t->margin_c) {
            double frac = (t->limit_c - t->temp_c) / t->margin_c;               /* (0, 1) */
            double cap = lv[0].watts + frac * (lv[top].watts - lv[0].watts);    /* W */
            while (thermal_level > 0 && lv[thermal_level].watts > cap) thermal_level--;
        }
    }
    out->thermal_level = thermal_level;

    /* 3. energy: project every level over the horizon; keep the highest that stays >= floor */
    double horizon = s->p.horizon_min_s; /* s */
    if (isfinite(e->eclipse_exit_s) && e->eclipse_exit_s > horizon) horizon = e->eclipse_exit_s;
    out->horizon_s = horizon;
    int chosen = -1;
    double lo, end; /* Wh */
    for (int l = top; l >= 0; l--) {
        double compute = (double)work / lv[l].tokens_per_s; /* s */
        if (compute > horizon) compute = horizon;
        tk_sched_project(e, horizon, lv[l].watts, compute, &lo, &end);
        if (!(lo >= e->floor_wh)) continue;
        if (out->energy_level < 0) out->energy_level = l;
        if (l <= thermal_level) {
            chosen = l;
            out->soc_min_wh = lo;
            out->soc_end_wh = end;
            break;
        }
    }

    if (n_runnable == 0) out->reason = TK_SCHED_IDLE_NO_JOBS;
    else if (thermal_level < 0) out->reason = TK_SCHED_IDLE_THERMAL;
    else if (out->energy_level < 0) out->reason = TK_SCHED_IDLE_ENERGY_FLOOR;
    else if (chosen < 0) out->reason = TK_SCHED_IDLE_THERMAL; /* energy allows only hot levels */
    else if (out->energy_level > thermal_level) out->reason = TK_SCHED_THROTTLED_THERMAL;
    else if (chosen < top) out->reason = TK_SCHED_THROTTLED_ENERGY;
    else out->reason = TK_SCHED_RUN;

    if (n_runnable == 0 || chosen < 0) { /* idle: no batch; report the idle projection */
        tk_sched_project(e, horizon, 0.0, 0.0, &lo, &end);
        out->soc_min_wh = lo;
        out->soc_end_wh = end;
        out->n_preempted = n_running;
        return TK_OK;
    }
    out->level = chosen;
    out->tokens_per_s = lv[chosen].tokens_per_s;
    out->n_batch = n_best;
    int kept = 0; /* running jobs that stay */
    for (int k = 0; k < n_best; k++) {
        out->index[k] = best[k].index;
        out->id[k] = best[k].id;
        kept += jobs[best[k].index].running;
    }
    out->n_preempted = n_running - kept;
    return TK_OK;
}
