/* tk_run: run the engine on a GGUF model from the command line, without Python.
 *
 *   tk_run MODEL.gguf --ids 1,2,3 [--simd auto|scalar|avx2|neon] [--threads N] [--n-ctx N]
 *                     [--generate K] [--logits]
 *
 * Loads the model, prefills the ids on sequence slot 0 and, with --logits, prints the last
 * position's logits one per line as exact hex floats ("%a"), so two builds (x86 scalar, aarch64
 * NEON, ...) can be compared bit for bit with diff. With --generate K it then decodes K tokens
 * greedily (temperature 0, no end-of-sequence ids) and prints the generated ids on one line.
 * n_ctx defaults to the number of ids plus K. Errors: one line on stderr and exit status 1.
 *
 * Build (any machine):  cc -O2 -std=c11 -ffp-contract=off -pthread csrc/tk_*.c -lm -o tk_run
 * This file has a main(), so the Python extension build must leave it out (setup.py).
 */
#include "tk_engine.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    fprintf(stderr, "usage: tk_run MODEL.gguf --ids 1,2,3 [--simd auto|scalar|avx2|neon] "
                    "[--threads N] [--n-ctx N] [--generate K] [--logits]\n");
}

static int die(const char *msg, const char *arg) {
    if (arg) fprintf(stderr, "tk_run: %s: %s\n", msg, arg);
    else fprintf(stderr, "tk_run: %s\n", msg);
    return 1;
}

/* A decimal int in [lo, hi] ending at *end; TK_ERR on anything else. */
static int parse_int(const char *s, long lo, long hi, int *out, const char **end) {
    char *e;
    errno = 0;
    if (!s || !*s || *s == ' ' || *s == '+') return TK_ERR;
    long v = strtol(s, &e, 10);
    if (e == s || errno || v < lo || v > hi) return TK_ERR;
    if (end) *end = e;
    else if (*e) return TK_ERR;
    *out = (int)v;
    return TK_OK;
}

/* "1,2,3" into a new array; TK_ERR (and nothing allocated) on a malformed list. */
static int parse_ids(const char *s, int **ids, int *n) {
    int count = 1;
    for (const char *p = s; *p; p++) count += *p == ',';
    int *a = malloc((size_t)count * sizeof *a);
    if (!a) return TK_ERR;
    const char *p = s;
    for (int i = 0; i < count; i++) {
        const char *e;
        if (parse_int(p, 0, INT_MAX, &a[i], &e) != TK_OK || (*e != ',' && *e != '\0') ||
            (*e == ',') != (i < count - 1)) {
            free(a);
            return TK_ERR;
        }
        p = e + 1;
    }
    *ids = a;
    *n = count;
    return TK_OK;
}

static int parse_simd(const char *s, int *out) {
    static const char *names[] = {"auto", "scalar", "avx2", "neon"};
    static const int values[] = {TK_SIMD_AUTO, TK_SIMD_SCALAR, TK_SIMD_AVX2, TK_SIMD_NEON};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = values[i];
            return TK_OK;
        }
    return TK_ERR;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *ids_arg = NULL;
    int simd = TK_SIMD_AUTO, n_threads = 1, n_ctx = 0, n_gen = 0, want_logits = 0;

    /* ---- arguments */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = strcmp(a, "--ids") == 0 || strcmp(a, "--simd") == 0 ||
                        strcmp(a, "--threads") == 0 || strcmp(a, "--n-ctx") == 0 ||
                        strcmp(a, "--generate") == 0;
        if (has_value && i + 1 >= argc) {
            usage();
            return die("missing value after", a);
        }
        if (strcmp(a, "--ids") == 0) {
            ids_arg = argv[++i];
        } else if (strcmp(a, "--simd") == 0) {
            if (parse_simd(argv[++i], &simd) != TK_OK) return die("unknown --simd (auto|scalar|avx2|neon)", argv[i]);
        } else if (strcmp(a, "--threads") == 0) {
            if (parse_int(argv[++i], 1, 1024, &n_threads, NULL) != TK_OK) return die("bad --threads", argv[i]);
        } else if (strcmp(a, "--n-ctx") == 0) {
            if (parse_int(argv[++i], 1, INT_MAX, &n_ctx, NULL) != TK_OK) return die("bad --n-ctx", argv[i]);
        } else if (strcmp(a, "--generate") == 0) {
            if (parse_int(argv[++i], 1, 1 << 20, &n_gen, NULL) != TK_OK) return die("bad --generate", argv[i]);
        } else if (strcmp(a, "--logits") == 0) {
            want_logits = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            return 0;
        } else if (a[0] == '-' && a[1] == '-') {
            usage();
            return die("unknown option", a);
        } else if (!model_path) {
            model_path = a;
        } else {
            usage();
            return die("unexpected argument", a);
        }
    }
    if (!model_path || !ids_arg) {
        usage();
        return die(!model_path ? "no model path given" : "no --ids given", NULL);
    }
    if (!want_logits && n_gen == 0) return die("nothing to do: give --logits and/or --generate K", NULL);

    int *ids = NULL, n_ids = 0;
    if (parse_ids(ids_arg, &ids, &n_ids) != TK_OK)
        return die("--ids must be comma-separated non-negative integers", ids_arg);
    if (n_ctx == 0) {
        if ((long)n_ids + n_gen > INT_MAX) {
            free(ids);
            return die("prompt plus --generate is too long", NULL);
        }
        n_ctx = n_ids + n_gen;
    }

    /* ---- model and decoder */
    char err[TK_ERR_LEN] = {0};
    tk_load_params lp = {.n_ctx = n_ctx, .n_slots = 1, .n_threads = n_threads, .simd = simd};
    tk_model *m = NULL;
    if (tk_model_load(&m, model_path, &lp, err) != TK_OK) {
        free(ids);
        return die(err, NULL);
    }
    tk_decoder *d = NULL;
    if (tk_decoder_new(&d, m, err) != TK_OK) {
        tk_model_free(m);
        free(ids);
        return die(err, NULL);
    }
    const int vocab = tk_model_config(m)->vocab;
    int status = 0;

    /* ---- prefill, logits */
    if (want_logits) {
        const float *logits = NULL;
        if (tk_decoder_prefill(d, 0, ids, n_ids, &logits) != TK_OK) {
            status = die(tk_decoder_error(d), NULL);
            goto done;
        }
        for (int i = 0; i < vocab; i++)
            if (printf("%a\n", (double)logits[i]) < 0) {
                status = die("cannot write to stdout", NULL);
                goto done;
            }
    }

    /* ---- greedy generation (reuses the prefilled cache of slot 0) */
    if (n_gen > 0) {
        int *out = malloc((size_t)n_gen * sizeof *out);
        if (!out) {
            status = die("out of memory", NULL);
            goto done;
        }
        tk_sample_params sp = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 0};
        tk_gen_stats st;
        if (tk_decoder_generate(d, 0, ids, n_ids, n_gen, &sp, NULL, 0, NULL, NULL, NULL, out, &st) != TK_OK) {
            free(out);
            status = die(tk_decoder_error(d), NULL);
            goto done;
        }
        for (int i = 0; i < st.n_generated; i++)
            if (printf(i ? " %d" : "%d", out[i]) < 0) {
                status = 1;
                break;
            }
        free(out);
        if (status || printf("\n") < 0) {
            status = die("cannot write to stdout", NULL);
            goto done;
        }
    }

    if (fflush(stdout) != 0) status = die("cannot write to stdout", NULL);
done:
    tk_decoder_free(d);
    tk_model_free(m);
    free(ids);
    return status;
}
