/* The decode loop, in C so a token costs no interpreter time: forward, sample, stop check,
 * append. Each sequence slot remembers the tokens its KV cache holds, so a new request that
 * shares a prefix with what a slot already evaluated (a resumed generation, a repeated system
 * prompt) only evaluates the rest.
 */
#include "tk_internal.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_EOS 8

typedef struct {
    int *tokens;            /* [n_ctx] the tokens whose keys/values the slot's cache holds */
    int n_past;             /* how many of them */
    /* batched decoding state */
    int active, fresh;      /* fresh: first token sampled at join, not yet handed out */
    int pending;            /* last token handed out, to be evaluated by the next step */
    int n_gen, max_new;
    tk_sample_params sp;
    tk_rng rng;             /* after the last token sampled (in a batch: maybe not handed out yet) */
    int eos[MAX_EOS], n_eos;
    /* what a resumed sequence needs, and the logits behind its latest token */
    uint64_t rng_out;       /* the RNG state after the last token handed out */
    const float *logits;    /* [vocab] the latest token was sampled from, in the model's buffer */
    uint64_t logits_pass;   /* the forward pass that wrote them (tk_decoder.n_passes) */
} slot_state;

struct tk_decoder {
    tk_model *m;
    const tk_config *c;
    int n_ctx, n_slots, max_rows;
    slot_state *slots;      /* [n_slots] */
    int *token_store;       /* [n_slots][n_ctx] backing for slot_state.tokens */
    tk_row *rows;           /* [max_rows] rows of the forward being built */
    int *row_slot;          /* [max_rows] which slot each batched row belongs to */
    tk_prob_index *scratch; /* [vocab] sampler candidates */
    uint64_t n_passes;      /* forward passes run: tells whether a slot's logits are still there */
    char err[TK_ERR_LEN];
};

int tk_decoder_new(tk_decoder **out, tk_model *m, char err[TK_ERR_LEN]) {
    *out = NULL;
    tk_decoder *d = calloc(1, sizeof *d);
    if (!d) return tk_fail(err, "out of memory");
    d->m = m;
    d->c = tk_model_config(m);
    d->n_ctx = tk_model_n_ctx(m);
    d->n_slots = tk_model_n_slots(m);
    d->max_rows = tk_model_max_rows(m);
    d->slots = calloc((size_t)d->n_slots, sizeof *d->slots);
    d->token_store = calloc((size_t)d->n_slots * d->n_ctx, sizeof *d->token_store);
    d->rows = calloc((size_t)d->max_rows, sizeof *d->rows);
    d->row_slot = calloc((size_t)d->max_rows, sizeof *d->row_slot);
    d->scratch = calloc((size_t)d->c->vocab, sizeof *d->scratch);
    if (!d->slots || !d->token_store || !d->rows || !d->row_slot || !d->scratch) {
        tk_decoder_free(d);
        return tk_fail(err, "out of memory allocating the decoder");
    }
    for (int s = 0; s < d->n_slots; s++) d->slots[s].tokens = d->token_store + (size_t)s * d->n_ctx;
    *out = d;
    return TK_OK;
}

void tk_decoder_free(tk_decoder *d) {
    if (!d) return;
    free(d->slots);
    free(d->token_store);
    free(d->rows);
    free(d->row_slot);
    free(d->scratch);
    free(d);
}

const char *tk_decoder_error(const tk_decoder *d) { return d->err; }

static int forward(tk_decoder *d, int n) {
    d->n_passes++; /* even a failed pass may have written the logits buffer */
    if (tk_model_forward(d->m, d->rows, n) != TK_OK)
        return tk_fail(d->err, "%s", tk_model_error(d->m));
    return TK_OK;
}

/* How many leading ids the slot's cache already holds. */
static int cached_prefix(const slot_state *s, const int *ids, int n) {
    int k = 0;
    while (k < s->n_past && k < n && s->tokens[k] == ids[k]) k++;
    return k;
}

/* Evaluate ids on the slot, skipping the prefix its cache already holds; at least the last id
 * is evaluated so its logits are fresh. */
static int prefill(tk_decoder *d, int slot, const int *ids, int n, int *n_reused,
                   const float **logits) {
    if (slot < 0 || slot >= d->n_slots)
        return tk_fail(d->err, "sequence slot %d is outside 0..%d", slot, d->n_slots - 1);
    if (n < 1) return tk_fail(d->err, "the prompt is empty");
    if (n > d->n_ctx)
        return tk_fail(d->err, "prompt of %d tokens does not fit the context of %d", n, d->n_ctx);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= d->c->vocab)
            return tk_fail(d->err, "token id %d is outside the vocabulary of %d", ids[i], d->c->vocab);
    slot_state *s = &d->slots[slot];
    const int keep = cached_prefix(s, ids, n - 1);
    s->n_past = keep;
    *n_reused = keep;
    for (int start = keep; start < n; start += d->max_rows) {
        int cnt = n - start < d->max_rows ? n - start : d->max_rows;
        for (int i = 0; i < cnt; i++) {
            d->rows[i] = (tk_row){ids[start + i], slot, start + i, start + i == n - 1};
        }
        if (forward(d, cnt)) {
            s->n_past = 0; /* the cache is now partly overwritten: trust none of it */
            return TK_ERR;
        }
        memcpy(s->tokens + start, ids + start, (size_t)cnt * sizeof *ids);
        s->n_past = start + cnt;
    }
    *logits = tk_model_logits(d->m);
    return TK_OK;
}

int tk_decoder_prefill(tk_decoder *d, int slot, const int *ids, int n, const float **logits) {
    int reused;
    if (slot >= 0 && slot < d->n_slots && d->slots[slot].active)
        return tk_fail(d->err, "sequence slot %d is in use by the batch", slot);
    return prefill(d, slot, ids, n, &reused, logits);
}

int tk_decoder_forget(tk_decoder *d, int slot) {
    if (slot < 0 || slot >= d->n_slots)
        return tk_fail(d->err, "sequence slot %d is outside 0..%d", slot, d->n_slots - 1);
    if (d->slots[slot].active) return tk_fail(d->err, "sequence slot %d is in use by the batch", slot);
    d->slots[slot].n_past = 0;
    return TK_OK;
}

static int is_eos(const int *eos, int n_eos, int tok) {
    for (int i = 0; i < n_eos; i++)
        if (eos[i] == tok) return 1;
    return 0;
}

static int check_sample_params(tk_decoder *d, const tk_sample_params *sp, int max_new, int n_eos) {
    if (max_new < 1) return tk_fail(d->err, "max tokens must be at least 1, got %d", max_new);
    if (!(sp->temperature >= 0.0f) || sp->temperature > 100.0f)
        return tk_fail(d->err, "temperature must be between 0 and 100, got %g", sp->temperature);
    if (sp->top_k < 0) return tk_fail(d->err, "top-k must be 0 (off) or positive, got %d", sp->top_k);
    if (!(sp->top_p > 0.0f) || sp->top_p > 1.0f)
        return tk_fail(d->err, "top-p must be in (0, 1], got %g", sp->top_p);
    if (n_eos < 0 || n_eos > MAX_EOS) return tk_fail(d->err, "at most %d end-of-sequence ids", MAX_EOS);
    return TK_OK;
}

int tk_decoder_generate(tk_decoder *d, int slot, const int *prompt, int n_prompt, int max_new,
                        const tk_sample_params *sp, const int *eos_ids, int n_eos,
                        tk_token_cb cb, void *user, volatile int *stop_flag,
                        int *out, tk_gen_stats *stats) {
    tk_gen_stats st = {0};
    if (check_sample_params(d, sp, max_new, n_eos)) return TK_ERR;
    if (slot >= 0 && slot < d->n_slots && d->slots[slot].active)
        return tk_fail(d->err, "sequence slot %d is in use by the batch", slot);
    tk_rng rng;
    tk_rng_start(&rng, sp);
    const float *logits;
    double t0 = tk_now();
    if (prefill(d, slot, prompt, n_prompt, &st.n_reused, &logits)) return TK_ERR;
    st.n_prompt = n_prompt;
    double t1 = tk_now();
    st.prefill_s = t1 - t0;
    slot_state *s = &d->slots[slot];
    for (;;) {
        int tok = tk_sample(logits, d->c->vocab, sp, &rng, d->scratch);
        s->rng_out = rng.state; /* readable by the callback: the state to save with tok */
        s->logits = logits;
        s->logits_pass = d->n_passes;
        if (st.n_generated == 0) st.first_token_s = tk_now() - t0;
        if (is_eos(eos_ids, n_eos, tok)) {
            st.stop_reason = TK_STOP_EOS;
            break;
        }
        out[st.n_generated++] = tok;
        if (cb && cb(tok, user)) {
            st.stop_reason = TK_STOP_REQUEST;
            break;
        }
        if (st.n_generated >= max_new) {
            st.stop_reason = TK_STOP_LIMIT;
            break;
        }
        if (stop_flag && *stop_flag) {
            st.stop_reason = TK_STOP_REQUEST;
            break;
        }
        if (s->n_past >= d->n_ctx) {
            st.stop_reason = TK_STOP_CONTEXT;
            break;
        }
        d->rows[0] = (tk_row){tok, slot, s->n_past, 1};
        if (forward(d, 1)) return TK_ERR;
        s->tokens[s->n_past++] = tok;
        logits = tk_model_logits(d->m);
    }
    st.decode_s = tk_now() - t1;
    st.rng_state = rng.state;
    if (stats) *stats = st;
    return TK_OK;
}

/* ----------------------------------------------------------------------------------------- */
/* Batched decoding */

int tk_batch_join(tk_decoder *d, const int *prompt, int n_prompt, int max_new,
                  const tk_sample_params *sp, const int *eos_ids, int n_eos, int *slot_out) {
    if (check_sample_params(d, sp, max_new, n_eos)) return TK_ERR;
    /* the free slot whose cache shares the longest prefix with this prompt */
    int best = -1, best_len = -1;
    for (int i = 0; i < d->n_slots; i++) {
        slot_state *s = &d->slots[i];
        if (s->active) continue;
        const int k = cached_prefix(s, prompt, n_prompt);
        if (k > best_len) {
            best = i;
            best_len = k;
        }
    }
    if (best < 0) return tk_fail(d->err, "all %d sequence slots are busy", d->n_slots);
    slot_state *s = &d->slots[best];
    const float *logits;
    int reused;
    if (prefill(d, best, prompt, n_prompt, &reused, &logits)) return TK_ERR;
    s->sp = *sp;
    tk_rng_start(&s->rng, sp);
    s->rng_out = s->rng.state; /* nothing handed out yet */
    memcpy(s->eos, eos_ids, (size_t)n_eos * sizeof *eos_ids);
    s->n_eos = n_eos;
    s->n_gen = 0;
    s->max_new = max_new;
    s->pending = tk_sample(logits, d->c->vocab, &s->sp, &s->rng, d->scratch);
    s->logits = logits;
    s->logits_pass = d->n_passes;
    s->fresh = 1;
    s->active = 1;
    *slot_out = best;
    return TK_OK;
}

/* Hand out tok for slot s and decide whether it ends the sequence. */
static int deliver(tk_decoder *d, slot_state *s, int tok) {
    s->n_gen++;
    s->rng_out = s->rng.state;
    if (is_eos(s->eos, s->n_eos, tok)) return TK_STOP_EOS;
    if (s->n_gen >= s->max_new) return TK_STOP_LIMIT;
    if (s->n_past >= d->n_ctx) return TK_STOP_CONTEXT;
    return TK_STOP_NONE;
}

int tk_batch_step(tk_decoder *d, int *tokens, int *slots, int *stops, int *n_out) {
    int n_rows = 0;
    *n_out = 0;
    for (int i = 0; i < d->n_slots; i++) {
        slot_state *s = &d->slots[i];
        if (!s->active || s->fresh) continue;
        d->rows[n_rows] = (tk_row){s->pending, i, s->n_past, 1};
        d->row_slot[n_rows++] = i;
    }
    if (n_rows > 0) {
        if (forward(d, n_rows)) return TK_ERR;
        for (int r = 0; r < n_rows; r++) {
            slot_state *s = &d->slots[d->row_slot[r]];
            s->tokens[s->n_past++] = s->pending;
        }
    }
    const float *logits = tk_model_logits(d->m);
    int r = 0;
    for (int i = 0; i < d->n_slots; i++) {
        slot_state *s = &d->slots[i];
        if (!s->active) continue;
        int tok;
        if (s->fresh) {
            tok = s->pending;
            s->fresh = 0;
        } else {
            s->logits = logits + (size_t)r++ * d->c->vocab;
            s->logits_pass = d->n_passes;
            tok = tk_sample(s->logits, d->c->vocab, &s->sp, &s->rng, d->scratch);
        }
        int stop = deliver(d, s, tok);
        s->pending = tok;
        if (stop != TK_STOP_NONE) s->active = 0;
        tokens[*n_out] = tok;
        slots[*n_out] = i;
        stops[*n_out] = stop;
        (*n_out)++;
    }
    return TK_OK;
}

int tk_batch_leave(tk_decoder *d, int slot) {
    if (slot < 0 || slot >= d->n_slots)
        return tk_fail(d->err, "sequence slot %d is outside 0..%d", slot, d->n_slots - 1);
    d->slots[slot].active = 0;
    return TK_OK;
}

int tk_batch_active(const tk_decoder *d) {
    int n = 0;
    for (int i = 0; i < d->n_slots; i++) n += d->slots[i].active;
    return n;
}

int tk_decoder_rng_state(tk_decoder *d, int slot, uint64_t *state) {
    if (slot < 0 || slot >= d->n_slots)
        return tk_fail(d->err, "sequence slot %d is outside 0..%d", slot, d->n_slots - 1);
    *state = d->slots[slot].rng_out;
    return TK_OK;
}

int tk_decoder_logits(tk_decoder *d, int slot, const float **logits) {
    if (slot < 0 || slot >= d->n_slots)
        return tk_fail(d->err, "sequence slot %d is outside 0..%d", slot, d->n_slots - 1);
    const slot_state *s = &d->slots[slot];
    if (!s->logits) return tk_fail(d->err, "sequence slot %d has sampled nothing yet", slot);
    if (s->logits_pass != d->n_passes)
        return tk_fail(d->err, "the logits of slot %d's last token were overwritten by a later "
                       "forward pass", slot);
    *logits = s->logits;
    return TK_OK;
}
