/* Sampling: greedy, or temperature then top-k then top-p (the order of Hugging Face
 * transformers), drawn from a seeded xorshift64* generator so a seed reproduces a run. */
#include "tk_internal.h"

#include <math.h>
#include <stdlib.h>

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void tk_rng_seed(tk_rng *r, uint64_t seed) {
    r->state = splitmix64(seed);
    if (r->state == 0) r->state = 1; /* xorshift must not start at zero */
}

void tk_rng_start(tk_rng *r, const tk_sample_params *sp) {
    if (sp->rng_state != 0) r->state = sp->rng_state;
    else tk_rng_seed(r, sp->seed);
}

static float rng_uniform(tk_rng *r) { /* [0, 1) */
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return (float)((r->state * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int by_prob_desc(const void *a, const void *b) {
    float pa = ((const tk_prob_index *)a)->p, pb = ((const tk_prob_index *)b)->p;
    if (pa != pb) return pa > pb ? -1 : 1;
    return ((const tk_prob_index *)a)->i - ((const tk_prob_index *)b)->i; /* stable order */
}

/* Move the k largest of c[0..n) to the front (unordered), by quickselect. */
static void select_top(tk_prob_index *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = c[(lo + hi) / 2].p;
        int i = lo, j = hi;
        while (i <= j) {
            while (c[i].p > pivot) i++;
            while (c[j].p < pivot) j--;
            if (i <= j) {
                tk_prob_index t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

int tk_sample(const float *logits, int vocab, const tk_sample_params *sp, tk_rng *rng,
              tk_prob_index *c) {
    if (sp->temperature <= 0.0f || sp->top_k == 1) return argmax(logits, vocab);
    int n = vocab;
    for (int i = 0; i < n; i++) {
        c[i].p = logits[i] / sp->temperature;
        c[i].i = i;
    }
    if (sp->top_k > 0 && sp->top_k < n) {
        select_top(c, n, sp->top_k);
        n = sp->top_k;
    }
    float mx = c[0].p;
    for (int i = 1; i < n; i++)
        if (c[i].p > mx) mx = c[i].p;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        c[i].p = expf(c[i].p - mx);
        sum += c[i].p;
    }
    for (int i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
    if (sp->top_p > 0.0f && sp->top_p < 1.0f) {
        /* candidates below (1 - p) / (n - 1) can never be inside the nucleus: drop them before
         * sorting, so a full-vocabulary top-p does not sort 49k entries (llama2.c's trick) */
        if (n > 1) {
            float cutoff = (1.0f - sp->top_p) / (float)(n - 1);
            int kept = 0;
            for (int i = 0; i < n; i++)
                if (c[i].p >= cutoff) c[kept++] = c[i];
            if (kept > 0) n = kept;
        }
        qsort(c, (size_t)n, sizeof *c, by_prob_desc);
        double cum = 0.0;
        int last = n - 1;
        for (int i = 0; i < n; i++) {
            cum += c[i].p;
            if (cum > sp->top_p) {
                last = i;
                break;
            }
        }
        n = last + 1;
    }
    /* the candidates' order is a function of the logits alone, so the draw is reproducible */
    double total = 0.0;
    for (int i = 0; i < n; i++) total += c[i].p;
    double r = rng_uniform(rng) * total, cdf = 0.0;
    for (int i = 0; i < n; i++) {
        cdf += c[i].p;
        if (r < cdf) return c[i].i;
    }
    return c[n - 1].i;
}
