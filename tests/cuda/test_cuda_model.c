/*
 * tests/cuda/test_cuda_model.c — the whole V4 model on the GPU (cuda/model_cuda.h) against
 * DeepSeek's golden logits and against the CPU engine (issue #7). Its own program
 * (build/cuda/ds4-cuda-model-tests, run by `make test-cuda`); without a GPU it says so and
 * exits 0 with every case reported as skipped, never as passed.
 *
 * Cases:
 *  1. tiny-v4 converted to F32 (../shared/testdata/tiny-v4, golden_topk16): `short` and
 *     `window` prompts evaluated on the GPU (batched, the default), then greedy decode fed with
 *     the golden tokens; every logit within 1e-3 of the golden (README "How to compare") and
 *     every greedy choice equal. Batched prefill (forward_chunk.c): chunks of 1, 7, 64 and the
 *     whole prompt vs the golden and token by token; `window`'s per-layer captures vs the CPU
 *     (first departure printed) and every batched product recomputed on the CPU (bit-identical).
 *  2. Snapshots cross backends: `window` prefilled on the GPU, saved (kvstate payload), restored
 *     into a CPU state, decoded on the CPU — and the reverse; both within 1e-3 of the golden.
 *     The GPU payload equals the CPU one in layout (same bytes of header, values within 1e-4).
 *  3. A synthetic Flash-width q2 model (DS4_CUDA_SYN_GGUF, else converted here: flash shape,
 *     4 layers, 16 experts, preset q2): every GPU matrix-vector product of one token
 *     recomputed on the CPU from the GPU's input (within 1e-4 relative), layer captures side
 *     by side; then the same tokens through CPU and GPU, free-running and one step from the
 *     same state, judged against the CPU's own one-ULP noise floor (see synth_case): max |Δ|
 *     and top-1 agreement reported; top-1 >= 99% where the CPU's margin is clear of the floor.
 * Scratch files go in $DS4_TMP (default /tmp).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda/cuda_api.h"
#include "cuda/model_cuda.h"
#include "cuda/model_cuda_impl.h"
#include "cuda/sample_dev.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "model/convert.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/synthetic.h"

static int n_pass, n_fail;

static void result(int ok, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void result(int ok, const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s %s: ", ok ? "PASS" : "FAIL", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (ok) n_pass++;
    else n_fail++;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *tmp_dir(void) {
    const char *t = getenv("DS4_TMP");
    return t && *t ? t : "/tmp";
}

static double max_abs(const float *a, const float *b, int64_t n, int64_t *at) {
    double mx = 0;
    int64_t w = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= mx)) { mx = d; w = i; } /* NaN counts as worst */
    }
    if (at) *at = w;
    return mx;
}

static int32_t argmax(const float *row, int64_t n) {
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++) if (row[i] > row[b]) b = (int32_t)i;
    return b;
}

/* ---- fixtures: converted models ---------------------------------------------------------- */

static int convert_tiny(const char *out, ds4_error *err) {
    const char *sh = getenv("DS4_SHARED");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/testdata/tiny-v4", sh && *sh ? sh : "../shared");
    cv_shape s;
    cv_hf *hf;
    cv_preset pr;
    cv_policy pol;
    cv_plan plan;
    if (cv_hf_open(&hf, dir, &s, err)) return 1;
    int rc = 1;
    if (cv_preset_from_name("f32", &pr, err)) goto out_hf;
    cv_policy_init(&pol, pr);
    if (cv_plan_build(&plan, &s, &pol, cv_hf_has_mtp(hf), err)) goto out_hf;
    if (cv_hf_check_plan(hf, &plan, err) == DS4_OK) {
        cv_source src;
        cv_hf_source(hf, &src);
        cv_options o = {0};
        o.n_threads = 4;
        rc = cv_convert(out, &s, &plan, &pol, &src, &o, err) != DS4_OK;
    }
    cv_plan_free(&plan);
out_hf:
    cv_hf_close(hf);
    return rc;
}

static int convert_synth(const char *out, ds4_error *err) {
    cv_shape s;
    cv_preset pr;
    cv_policy pol;
    cv_plan plan;
    if (cv_shape_preset(&s, "flash", err) || cv_shape_shrink(&s, 4, 16, err)) return 1;
    s.n_mtp = 0;
    if (cv_preset_from_name("q2", &pr, err)) return 1;
    cv_policy_init(&pol, pr);
    if (cv_plan_build(&plan, &s, &pol, false, err)) return 1;
    cv_synth *sy;
    int rc = 1;
    if (cv_synth_create(&sy, &plan, 1, err) == DS4_OK) {
        cv_source src;
        cv_synth_source(sy, &src);
        cv_options o = {0};
        rc = cv_convert(out, &s, &plan, &pol, &src, &o, err) != DS4_OK;
        cv_synth_free(sy);
    }
    cv_plan_free(&plan);
    return rc;
}

typedef struct fixture {
    gguf_ctx *g;
    model *m;
    cuda_model *cm;
} fixture;

static int fixture_open(fixture *f, const char *path, ds4_error *err) {
    memset(f, 0, sizeof *f);
    if (gguf_open(&f->g, path, err)) return 1;
    if (model_open(&f->m, f->g, NULL, err)) return 1;
    double t0 = now_s();
    if (cuda_model_open(&f->cm, f->m, f->g, 0, err)) return 1;
    printf("info: %s uploaded: %.1f MiB in %.2f s\n", path,
           (double)cuda_model_weight_bytes(f->cm) / (1 << 20), now_s() - t0);
    return 0;
}

static void fixture_close(fixture *f) {
    cuda_model_close(f->cm);
    model_close(f->m);
    gguf_close(f->g);
}

/* A CPU host state with its GPU twin. */
typedef struct gpu_state {
    model_state *host;
    cuda_state *dev;
} gpu_state;

static int gpu_state_create(gpu_state *s, fixture *f, int64_t n_ctx, ds4_error *err) {
    memset(s, 0, sizeof *s);
    if (model_state_create(&s->host, f->m, n_ctx, err)) return 1;
    return cuda_state_create(&s->dev, f->cm, s->host, err) != DS4_OK;
}

static void gpu_state_free(gpu_state *s) {
    cuda_state_free(s->dev);
    model_state_free(s->host);
}

/* ---- 1. golden ------------------------------------------------------------------------------ */

typedef struct golden_case {
    const int32_t *tokens, *dtokens;
    const float *prefill, *decode;
    int64_t T, N;
} golden_case;

static int golden_get(st_file *gf, const char *cs, golden_case *c) {
    char nm[96];
    const st_tensor *t;
    snprintf(nm, sizeof nm, "%s.tokens", cs);
    if (!(t = st_find(gf, nm))) return 1;
    c->tokens = (const int32_t *)t->data;
    c->T = (int64_t)t->n_elements;
    snprintf(nm, sizeof nm, "%s.decode_tokens", cs);
    if (!(t = st_find(gf, nm))) return 1;
    c->dtokens = (const int32_t *)t->data;
    c->N = (int64_t)t->n_elements;
    snprintf(nm, sizeof nm, "%s.prefill_logits", cs);
    if (!(t = st_find(gf, nm))) return 1;
    c->prefill = (const float *)t->data;
    snprintf(nm, sizeof nm, "%s.decode_logits", cs);
    if (!(t = st_find(gf, nm))) return 1;
    c->decode = (const float *)t->data;
    return 0;
}

/* Decode N golden tokens from the current state on GPU (dev != NULL) or CPU; logits [N][V]. */
static int decode_steps(fixture *f, model_state *host, cuda_state *dev, const golden_case *c,
                        float *logits, int32_t *greedy, const float *last, ds4_error *err) {
    int64_t V = model_get_hparams(f->m)->n_vocab;
    for (int64_t i = 0; i < c->N; i++) {
        greedy[i] = argmax(last, V);
        model_eval_opts od = {MODEL_LOGITS_LAST, logits + i * V, NULL, NULL};
        ds4_status st = dev ? cuda_model_eval(f->cm, dev, &c->dtokens[i], 1, &od, err)
                            : model_eval(f->m, host, &c->dtokens[i], 1, &od, err);
        if (st) return 1;
        last = logits + i * V;
    }
    return 0;
}

static void check_logits(const char *name, const float *got, const float *ref, int64_t rows,
                         int64_t V, double tol) {
    int64_t at;
    double e = max_abs(got, ref, rows * V, &at);
    result(e <= tol, name, "max |diff| %.3g (tol %.0e) at row %lld vocab %lld (ref %.6f got %.6f)", e,
           tol, (long long)(at / V), (long long)(at % V), ref[at], got[at]);
}

static void check_greedy(const char *name, const int32_t *got, const golden_case *c) {
    int64_t bad = -1;
    for (int64_t i = 0; i < c->N && bad < 0; i++)
        if (got[i] != c->dtokens[i]) bad = i;
    if (bad < 0) result(1, name, "%lld greedy tokens equal the golden", (long long)c->N);
    else result(0, name, "greedy step %lld: golden %d, got %d", (long long)bad, c->dtokens[bad], got[bad]);
}

static void golden_case_run(fixture *f, st_file *gf, const char *cs) {
    char name[128];
    ds4_error err = {0};
    golden_case c;
    snprintf(name, sizeof name, "tiny-v4 f32 %s", cs);
    if (golden_get(gf, cs, &c)) {
        result(0, name, "golden tensors of case '%s' missing", cs);
        return;
    }
    int64_t V = model_get_hparams(f->m)->n_vocab;
    float *pre = malloc((size_t)(c.T * V) * sizeof(float));
    float *dec = malloc((size_t)(c.N * V) * sizeof(float));
    int32_t *greedy = malloc((size_t)c.N * sizeof(int32_t));
    gpu_state s;
    if (gpu_state_create(&s, f, c.T + c.N, &err)) {
        result(0, name, "state: %s", err.msg);
        goto out;
    }
    model_eval_opts o = {MODEL_LOGITS_ALL, pre, NULL, NULL};
    double t0 = now_s();
    if (cuda_model_eval(f->cm, s.dev, c.tokens, c.T, &o, &err) ||
        decode_steps(f, s.host, s.dev, &c, dec, greedy, pre + (c.T - 1) * V, &err)) {
        result(0, name, "eval: %s", err.msg);
        gpu_state_free(&s);
        goto out;
    }
    printf("info: %s: %lld + %lld tokens on the GPU in %.3f s\n", name, (long long)c.T,
           (long long)c.N, now_s() - t0);
    char nm[160];
    snprintf(nm, sizeof nm, "%s prefill logits (GPU vs golden)", name);
    check_logits(nm, pre, c.prefill, c.T, V, 1e-3);
    snprintf(nm, sizeof nm, "%s decode logits (GPU vs golden)", name);
    check_logits(nm, dec, c.decode, c.N, V, 1e-3);
    snprintf(nm, sizeof nm, "%s greedy decode", name);
    check_greedy(nm, greedy, &c);
    gpu_state_free(&s);
out:
    free(pre);
    free(dec);
    free(greedy);
}

/* ---- Batched prefill chunks (issue #7, forward_chunk.c) --------------------------------- */

/* The prompt of golden case cs through chunks of 1, 7, 64 tokens and the whole prompt (logits
 * of every position): within 1e-3 of the golden, and within 1e-4 of token by token (the
 * decode path, cuda_state_set_batch off): matmul and matvec sum in another order, nothing
 * else differs. */
static void chunk_case(fixture *f, st_file *gf, const char *cs) {
    char name[160];
    ds4_error err = {0};
    golden_case c;
    snprintf(name, sizeof name, "tiny-v4 f32 %s chunked prefill", cs);
    if (golden_get(gf, cs, &c)) {
        result(0, name, "golden tensors of case '%s' missing", cs);
        return;
    }
    int64_t V = model_get_hparams(f->m)->n_vocab;
    float *ref = malloc((size_t)(c.T * V) * sizeof(float));
    float *got = malloc((size_t)(c.T * V) * sizeof(float));
    int64_t sizes[4] = {1, 7, 64, c.T};
    for (int k = -1; k < 4; k++) {
        gpu_state s;
        if (gpu_state_create(&s, f, c.T, &err)) {
            result(0, name, "state: %s", err.msg);
            break;
        }
        float *out = k < 0 ? ref : got;
        cuda_state_set_batch(s.dev, k >= 0);
        int64_t step = k < 0 ? c.T : sizes[k];
        ds4_status st = DS4_OK;
        for (int64_t t = 0; t < c.T && !st; t += step) {
            int64_t n = c.T - t < step ? c.T - t : step;
            model_eval_opts o = {MODEL_LOGITS_ALL, out + t * V, NULL, NULL};
            st = cuda_model_eval(f->cm, s.dev, c.tokens + t, n, &o, &err);
        }
        gpu_state_free(&s);
        if (st) {
            result(0, name, "eval (chunk %lld): %s", (long long)step, err.msg);
            break;
        }
        if (k < 0) continue;
        char nm[224];
        snprintf(nm, sizeof nm, "%s, chunks of %lld, vs golden", name, (long long)step);
        check_logits(nm, got, c.prefill, c.T, V, 1e-3);
        snprintf(nm, sizeof nm, "%s, chunks of %lld, vs token by token", name, (long long)step);
        check_logits(nm, got, ref, c.T, V, 1e-4);
    }
    free(ref);
    free(got);
}

/* ---- CUDA graph across position bounds (issue #7) ---------------------------------------- */

/* tiny-v4 over 700 positions: the graph is captured for bounds 256, 512 and 700 (the context),
 * the ratio-128 compressor finishes entries, the indexer scores past 4·top-k. Every logit must
 * equal the op-by-op run's bit for bit (the same kernels; extra splits/rows add exact zeros). */
#define GB_T 700
static void rand_tokens(int32_t *t, int64_t n, int64_t V);
static void graph_bounds_case(fixture *f) {
    const char *name = "tiny-v4 f32: CUDA graph across position bounds equals op by op";
    ds4_error err = {0};
    int64_t V = model_get_hparams(f->m)->n_vocab;
    int32_t *toks = malloc((size_t)GB_T * sizeof(int32_t));
    float *la = malloc((size_t)(GB_T * V) * sizeof(float));
    float *lb = malloc((size_t)(GB_T * V) * sizeof(float));
    gpu_state a = {0}, b = {0};
    if (!toks || !la || !lb) {
        result(0, name, "out of memory");
        goto out;
    }
    rand_tokens(toks, GB_T, V);
    if (gpu_state_create(&a, f, GB_T, &err) || gpu_state_create(&b, f, GB_T, &err)) {
        result(0, name, "states: %s", err.msg);
        goto out;
    }
    cuda_state_set_graph(b.dev, false);
    /* every position through the decode step (prompts are batched by default) */
    cuda_state_set_batch(a.dev, false);
    cuda_state_set_batch(b.dev, false);
    model_eval_opts oa = {MODEL_LOGITS_ALL, la, NULL, NULL}, ob = {MODEL_LOGITS_ALL, lb, NULL, NULL};
    /* two calls each, so a graph captured in one call is reused by the next */
    if (cuda_model_eval(f->cm, a.dev, toks, 300, &oa, &err) ||
        cuda_model_eval(f->cm, b.dev, toks, 300, &ob, &err)) {
        result(0, name, "eval: %s", err.msg);
        goto out;
    }
    oa.logits = la + 300 * V;
    ob.logits = lb + 300 * V;
    if (cuda_model_eval(f->cm, a.dev, toks + 300, GB_T - 300, &oa, &err) ||
        cuda_model_eval(f->cm, b.dev, toks + 300, GB_T - 300, &ob, &err)) {
        result(0, name, "eval: %s", err.msg);
        goto out;
    }
    int64_t at = 0;
    double e = max_abs(la, lb, GB_T * V, &at);
    result(e == 0.0, name, "%d positions, max |diff| %.3g at position %lld (must be 0)", GB_T, e,
           (long long)(at / V));
out:
    if (a.host) gpu_state_free(&a);
    if (b.host) gpu_state_free(&b);
    free(toks);
    free(la);
    free(lb);
}

/* Per-layer captures of a whole prompt (model_capture): rows [what][layer][T][len], routed
 * experts [layer][T][K], indexer rows [layer][T][topk] with counts. */
#define CAP_WHATS 4
static const char *const cap_what[CAP_WHATS] = {"attn_out", "h_attn", "ffn_out", "h_out"};
typedef struct cap_store {
    int64_t T, L, K, topk, len[CAP_WHATS];
    float *rows[CAP_WHATS];
    int32_t *exp, *idx, *n_idx;
} cap_store;

static void cap_layer(void *u, int64_t il, const char *what, int64_t pos0, int64_t n,
                      const float *rows, int64_t row_len) {
    cap_store *c = u;
    for (int k = 0; k < CAP_WHATS; k++)
        if (strcmp(what, cap_what[k]) == 0 && row_len == c->len[k] && il < c->L && pos0 + n <= c->T)
            memcpy(c->rows[k] + (il * c->T + pos0) * row_len, rows, (size_t)(n * row_len) * sizeof(float));
}

static void cap_experts(void *u, int64_t il, int64_t pos, const int32_t *ids, int n) {
    cap_store *c = u;
    if (il < c->L && pos < c->T && n == c->K)
        memcpy(c->exp + (il * c->T + pos) * c->K, ids, (size_t)n * sizeof(int32_t));
}

static void cap_indexer(void *u, int64_t il, int64_t pos, const int32_t *rows, int n) {
    cap_store *c = u;
    if (il >= c->L || pos >= c->T || n > c->topk) return;
    memcpy(c->idx + (il * c->T + pos) * c->topk, rows, (size_t)n * sizeof(int32_t));
    c->n_idx[il * c->T + pos] = n;
}

static int cap_init(cap_store *c, const model_hparams *hp, int64_t T) {
    memset(c, 0, sizeof *c);
    c->T = T;
    c->L = hp->n_layer;
    c->K = hp->n_expert_used;
    c->topk = hp->idx_topk > 0 ? hp->idx_topk : 1;
    int64_t D = hp->n_embd, hcD = hp->n_hc * hp->n_embd;
    int64_t lens[CAP_WHATS] = {D, hcD, D, hcD};
    for (int k = 0; k < CAP_WHATS; k++) {
        c->len[k] = lens[k];
        if (!(c->rows[k] = calloc((size_t)(c->L * T * lens[k]), sizeof(float)))) return 1;
    }
    c->exp = calloc((size_t)(c->L * T * c->K), sizeof(int32_t));
    c->idx = calloc((size_t)(c->L * T * c->topk), sizeof(int32_t));
    c->n_idx = calloc((size_t)(c->L * T), sizeof(int32_t));
    return !c->exp || !c->idx || !c->n_idx;
}

static void cap_free(cap_store *c) {
    for (int k = 0; k < CAP_WHATS; k++) free(c->rows[k]);
    free(c->exp);
    free(c->idx);
    free(c->n_idx);
}

/* The first position (then layer, in forward order) where got departs from ref by more than
 * tol, and the routing decisions that differ first; printed as info lines. */
static double cap_compare(const char *label, const cap_store *ref, const cap_store *got,
                          double tol) {
    double worst = 0;
    int64_t fp = -1, fl = -1;
    int fk = -1;
    double fd = 0;
    for (int64_t p = 0; p < ref->T && fp < 0; p++)
        for (int64_t l = 0; l < ref->L && fp < 0; l++)
            for (int k = 0; k < CAP_WHATS && fp < 0; k++) {
                int64_t len = ref->len[k], o = (l * ref->T + p) * len;
                double d = max_abs(ref->rows[k] + o, got->rows[k] + o, len, NULL);
                if (d > tol) { fp = p; fl = l; fk = k; fd = d; }
            }
    for (int k = 0; k < CAP_WHATS; k++) {
        double d = max_abs(ref->rows[k], got->rows[k], ref->L * ref->T * ref->len[k], NULL);
        if (d > worst) worst = d;
        printf("info: %s: %s max |diff| %.3g\n", label, cap_what[k], d);
    }
    if (fp >= 0)
        printf("info: %s: first beyond %.0e at position %lld, layer %lld, %s (|diff| %.3g)\n", label,
               tol, (long long)fp, (long long)fl, cap_what[fk], fd);
    for (int64_t p = 0, shown = 0; p < ref->T && shown < 3; p++)
        for (int64_t l = 0; l < ref->L && shown < 3; l++) {
            const int32_t *a = ref->exp + (l * ref->T + p) * ref->K, *b = got->exp + (l * ref->T + p) * ref->K;
            if (memcmp(a, b, (size_t)ref->K * sizeof(int32_t)) != 0) {
                printf("info: %s: experts differ at position %lld layer %lld\n", label, (long long)p,
                       (long long)l);
                shown++;
            }
            int64_t ni = ref->n_idx[l * ref->T + p];
            const int32_t *x = ref->idx + (l * ref->T + p) * ref->topk, *y = got->idx + (l * ref->T + p) * ref->topk;
            if (ni != got->n_idx[l * ref->T + p] || memcmp(x, y, (size_t)ni * sizeof(int32_t)) != 0) {
                printf("info: %s: indexer rows differ at position %lld layer %lld\n", label,
                       (long long)p, (long long)l);
                shown++;
            }
        }
    return worst;
}

/* Where the batched prefill departs from the CPU (find the op, not guess): the prompt of case
 * cs on the CPU, on the GPU batched (one call) and token by token, all with captures. */
static void chunk_layers_case(fixture *f, st_file *gf, const char *cs) {
    char name[160];
    snprintf(name, sizeof name, "tiny-v4 f32 %s: batched prefill layer captures vs CPU", cs);
    ds4_error err = {0};
    golden_case c;
    if (golden_get(gf, cs, &c)) {
        result(0, name, "golden tensors of case '%s' missing", cs);
        return;
    }
    const model_hparams *hp = model_get_hparams(f->m);
    int64_t V = hp->n_vocab;
    float *lg = malloc((size_t)(c.T * V) * sizeof(float));
    cap_store cc = {0}, cb = {0}, ct = {0};
    model_state *cpu = NULL;
    gpu_state gb = {0}, gt = {0};
    if (!lg || cap_init(&cc, hp, c.T) || cap_init(&cb, hp, c.T) || cap_init(&ct, hp, c.T) ||
        model_state_create(&cpu, f->m, c.T, &err) || gpu_state_create(&gb, f, c.T, &err) ||
        gpu_state_create(&gt, f, c.T, &err)) {
        result(0, name, "setup: %s", err.msg);
        goto out;
    }
    model_capture kc = {&cc, cap_layer, cap_experts, cap_indexer, NULL};
    model_capture kb = {&cb, cap_layer, cap_experts, cap_indexer, NULL};
    model_capture kt = {&ct, cap_layer, cap_experts, cap_indexer, NULL};
    model_eval_opts oc = {MODEL_LOGITS_ALL, lg, NULL, &kc, NULL};
    model_eval_opts ob = {MODEL_LOGITS_ALL, lg, NULL, &kb, NULL};
    model_eval_opts ot = {MODEL_LOGITS_ALL, lg, NULL, &kt, NULL};
    cuda_state_set_batch(gb.dev, true);
    cuda_state_set_batch(gt.dev, false);
    if (model_eval(f->m, cpu, c.tokens, c.T, &oc, &err) ||
        cuda_model_eval(f->cm, gb.dev, c.tokens, c.T, &ob, &err) ||
        cuda_model_eval(f->cm, gt.dev, c.tokens, c.T, &ot, &err)) {
        result(0, name, "eval: %s", err.msg);
        goto out;
    }
    cap_compare("GPU token by token vs CPU", &cc, &ct, 1e-5);
    double e = cap_compare("GPU batched vs CPU", &cc, &cb, 0);
    /* Every op of the chunk computes the CPU's bits (products in its order, cpu/refmath.h's
     * exp / cos / sin on both sides): the captures are equal, not close (h6, session 4). */
    result(e == 0, name, "max |diff| %.3g over every layer row (must be 0)", e);
out:
    if (gb.host) gpu_state_free(&gb);
    if (gt.host) gpu_state_free(&gt);
    model_state_free(cpu);
    cap_free(&cc);
    cap_free(&cb);
    cap_free(&ct);
    free(lg);
}

/* ---- 2. snapshots across backends --------------------------------------------------------- */

/* Payload layout check: identical header (magic, shapes, position, ratios), then values. */
static void compare_payloads(const char *name, const uint8_t *a, const uint8_t *b, size_t n,
                             size_t header) {
    if (memcmp(a, b, header) != 0) {
        result(0, name, "payload headers differ");
        return;
    }
    double mx = 0;
    size_t at = 0, n_f = (n - header) / 4;
    for (size_t i = 0; i < n_f; i++) {
        float x, y;
        memcpy(&x, a + header + 4 * i, 4);
        memcpy(&y, b + header + 4 * i, 4);
        if (x == y) continue; /* also equal infinities (fresh compressor scores) */
        double d = fabs((double)x - (double)y);
        if (!(d <= mx)) { mx = d; at = i; }
    }
    result(mx <= 1e-4, name, "%zu bytes, header equal, max |diff| of %zu values %.3g (tol 1e-4) at %zu",
           n, n_f, mx, at);
}

static void snapshot_cases(fixture *f, st_file *gf) {
    const char *name = "snapshot window";
    ds4_error err = {0};
    golden_case c;
    if (golden_get(gf, "window", &c)) {
        result(0, name, "golden tensors of case 'window' missing");
        return;
    }
    const model_hparams *hp = model_get_hparams(f->m);
    int64_t V = hp->n_vocab, n_ctx = c.T + c.N;
    float *last = malloc((size_t)V * sizeof(float));
    float *dec = malloc((size_t)(c.N * V) * sizeof(float));
    int32_t *greedy = malloc((size_t)c.N * sizeof(int32_t));
    gpu_state g;
    model_state *cpu = NULL, *cpu2 = NULL;
    uint8_t *pg = NULL, *pc = NULL;
    if (gpu_state_create(&g, f, n_ctx, &err) || model_state_create(&cpu, f->m, n_ctx, &err) ||
        model_state_create(&cpu2, f->m, n_ctx, &err)) {
        result(0, name, "states: %s", err.msg);
        goto out;
    }
    model_eval_opts o = {MODEL_LOGITS_LAST, last, NULL, NULL};
    /* GPU prefill -> payload -> CPU state -> CPU decode. */
    if (cuda_model_eval(f->cm, g.dev, c.tokens, c.T, &o, &err) || cuda_state_sync_host(g.dev, &err)) {
        result(0, name, "GPU prefill: %s", err.msg);
        goto out;
    }
    size_t n = model_state_serialized_bytes(g.host);
    pg = malloc(n);
    pc = malloc(n);
    if (model_state_serialize(g.host, pg, n, &err) || model_state_deserialize(cpu2, pg, n, &err) ||
        decode_steps(f, cpu2, NULL, &c, dec, greedy, last, &err)) {
        result(0, name, "GPU snapshot -> CPU: %s", err.msg);
        goto out;
    }
    check_logits("snapshot: GPU prefill, restored on the CPU, CPU decode vs golden", dec, c.decode,
                 c.N, V, 1e-3);
    check_greedy("snapshot: GPU -> CPU greedy decode", greedy, &c);
    /* CPU prefill -> payload -> GPU state -> GPU decode. */
    if (model_eval(f->m, cpu, c.tokens, c.T, &o, &err) || model_state_serialize(cpu, pc, n, &err)) {
        result(0, name, "CPU prefill: %s", err.msg);
        goto out;
    }
    size_t header = 8 + 5 * 8 + (size_t)hp->n_layer * 8;
    compare_payloads("snapshot payload: GPU state vs CPU state after the same prefill", pg, pc, n,
                     header);
    model_state_reset(g.host);
    cuda_state_host_changed(g.dev);
    if (model_state_deserialize(g.host, pc, n, &err)) {
        result(0, name, "CPU snapshot -> GPU: %s", err.msg);
        goto out;
    }
    cuda_state_host_changed(g.dev);
    if (decode_steps(f, g.host, g.dev, &c, dec, greedy, last, &err)) {
        result(0, name, "GPU decode after restore: %s", err.msg);
        goto out;
    }
    check_logits("snapshot: CPU prefill, restored on the GPU, GPU decode vs golden", dec, c.decode,
                 c.N, V, 1e-3);
    check_greedy("snapshot: CPU -> GPU greedy decode", greedy, &c);
out:
    if (g.host) gpu_state_free(&g);
    model_state_free(cpu);
    model_state_free(cpu2);
    free(pg);
    free(pc);
    free(last);
    free(dec);
    free(greedy);
}

/* ---- 3. synthetic Flash width: GPU vs CPU ------------------------------------------------- */

/* Why not "equal within 1e-3" as for tiny-v4 f32: a q2 model quantizes every activation
 * (Q8_K / Q8_0 records) and rounds each KV row through FP8 (MODEL_MATH §12). The GPU sums the
 * blocks of a product in another order, so its values differ from the CPU's in the last bit;
 * each such difference flips a rounding now and then, and the quantization chain (FP8 KV ->
 * Q8 of the attention output -> Q8 of the next input ...) carries the flips on, so within one
 * token the logits differ by about as much as the whole activation quantization error. The
 * CPU does the same to itself: the noise floor here is the CPU run again with every element of
 * one norm weight moved by one ULP (a perturbation of the size of the GPU's reordering).
 * Measured on an H200 and on the dev box, both give max |diff| ~0.13 at position 0.
 * So the GPU must stay within twice that floor, agree on top-1 wherever the CPU's top-2 margin
 * is clear of it, and agree about as often as the perturbed CPU does elsewhere. The per-product
 * check (synth_diagnose) is the exact one: every GPU matvec within 1e-4 of the CPU's. */
#define SYN_T 160     /* prompt tokens */
#define SYN_N 32      /* greedy decode steps */
#define SYN_STEP 8    /* same-state comparison every SYN_STEP prompt positions */

static void rand_tokens(int32_t *t, int64_t n, int64_t V) {
    uint64_t x = 12345;
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        t[i] = (int32_t)((z ^ (z >> 31)) % (uint64_t)V);
    }
}

static int64_t top1_agree(const float *a, const float *b, int64_t rows, int64_t V) {
    int64_t n = 0;
    for (int64_t r = 0; r < rows; r++) n += argmax(a + r * V, V) == argmax(b + r * V, V);
    return n;
}

/* One line: max |diff| at the first positions and where it first exceeds 1e-2. */
static void diff_profile(const char *what, const float *a, const float *b, int64_t rows, int64_t V) {
    printf("info: %s: max |diff| by position:", what);
    int64_t first = -1;
    for (int64_t r = 0; r < rows; r++) {
        double e = max_abs(a + r * V, b + r * V, V, NULL);
        if (r < 4) printf(" p%lld %.2g", (long long)r, e);
        if (first < 0 && e > 1e-2) first = r;
    }
    if (first >= 0) printf("; first > 1e-2 at p%lld\n", (long long)first);
    else printf("; never > 1e-2\n");
}

/* CPU: tokens [0, T+N) (greedy after T, choices written into toks[T..]) into l [T+N][V]. */
static int cpu_run(model *m, int32_t *toks, float *l, int greedy, ds4_error *err) {
    int64_t V = model_get_hparams(m)->n_vocab;
    model_state *st;
    if (model_state_create(&st, m, SYN_T + SYN_N, err)) return 1;
    model_eval_opts o = {MODEL_LOGITS_ALL, l, NULL, NULL};
    int rc = model_eval(m, st, toks, SYN_T, &o, err) != DS4_OK;
    for (int64_t i = 0; i < SYN_N && !rc; i++) {
        if (greedy) toks[SYN_T + i] = argmax(l + (SYN_T + i - 1) * V, V);
        model_eval_opts od = {MODEL_LOGITS_LAST, l + (SYN_T + i) * V, NULL, NULL};
        rc = model_eval(m, st, &toks[SYN_T + i], 1, &od, err) != DS4_OK;
    }
    model_state_free(st);
    return rc;
}

/* Where GPU and CPU part, for one token from the empty state: every matrix-vector product of
 * the GPU recomputed on the CPU from the GPU's own input (verification hook), and the layer
 * captures (attn_out, h_attn, ffn_out, h_out) of both backends side by side. */
typedef struct mv_stat {
    char what[32];
    double worst;
    int64_t layer;
    int n;
} mv_stat;

typedef struct check_ctx {
    model *m;
    cpu_buf buf;
    float *yref;
    int64_t cap;
    mv_stat st[64];
    int n_st;
    int failed;
    float *rows[2][64][4];    /* [backend][layer][what] */
    int64_t n_layer;
} check_ctx;

static void on_mv(void *u, int64_t il, const char *what, const cpu_mat *w, const float *x,
                  const float *y) {
    check_ctx *c = u;
    ds4_error err = {0};
    if (w->n_out > c->cap) {
        float *p = realloc(c->yref, (size_t)w->n_out * sizeof(float));
        if (!p) { c->failed = 1; return; }
        c->yref = p;
        c->cap = w->n_out;
    }
    if (cpu_matmul(c->m->pool, w, x, w->n_in, 1, c->yref, w->n_out, &c->buf, &err)) {
        c->failed = 1;
        return;
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < w->n_out; i++) {
        double d = fabs((double)y[i] - (double)c->yref[i]);
        if (!(d <= num)) num = d;
        den = fmax(den, fabs((double)c->yref[i]));
    }
    double rel = den > 0 ? num / den : num;
    char nm[32];
    snprintf(nm, sizeof nm, "%s", what);
    char *b = strchr(nm, '[');
    if (b) *b = 0;
    int k = 0;
    while (k < c->n_st && strcmp(c->st[k].what, nm)) k++;
    if (k == c->n_st) {
        if (c->n_st == 64) return;
        snprintf(c->st[k].what, sizeof c->st[k].what, "%s", nm);
        c->st[k].worst = -1;
        c->n_st++;
    }
    c->st[k].n++;
    if (!(rel <= c->st[k].worst)) {
        c->st[k].worst = rel;
        c->st[k].layer = il;
    }
}

static const char *k_what[4] = {"attn_out", "h_attn", "ffn_out", "h_out"};
static int g_cap_backend;

static void on_layer(void *u, int64_t layer, const char *what, int64_t pos0, int64_t n,
                     const float *rows, int64_t row_len) {
    check_ctx *c = u;
    (void)pos0;
    (void)n;
    for (int w = 0; w < 4; w++) {
        if (strcmp(what, k_what[w]) || layer >= 64) continue;
        float **slot = &c->rows[g_cap_backend][layer][w];
        free(*slot);
        *slot = malloc((size_t)row_len * sizeof(float));
        if (*slot) memcpy(*slot, rows, (size_t)row_len * sizeof(float));
    }
}

static void synth_diagnose(fixture *f, const int32_t *toks) {
    const char *name = "synthetic flash q2: GPU matvecs recomputed on the CPU (1 token)";
    const model_hparams *hp = model_get_hparams(f->m);
    int64_t V = hp->n_vocab, D = hp->n_embd;
    ds4_error err = {0};
    check_ctx c;
    memset(&c, 0, sizeof c);
    c.m = f->m;
    c.n_layer = hp->n_layer;
    float *lg = malloc((size_t)V * sizeof(float)), *lc = malloc((size_t)V * sizeof(float));
    gpu_state g = {0};
    model_state *cpu = NULL;
    model_capture mc = {&c, on_layer, NULL, NULL};
    if (gpu_state_create(&g, f, 4, &err) || model_state_create(&cpu, f->m, 4, &err)) {
        result(0, name, "states: %s", err.msg);
        goto out;
    }
    cuda_state_set_check(g.dev, on_mv, &c);
    model_eval_opts og = {MODEL_LOGITS_LAST, lg, NULL, &mc};
    g_cap_backend = 1;
    if (cuda_model_eval(f->cm, g.dev, toks, 1, &og, &err)) {
        result(0, name, "GPU: %s", err.msg);
        goto out;
    }
    cuda_state_set_check(g.dev, NULL, NULL);
    g_cap_backend = 0;
    model_eval_opts oc = {MODEL_LOGITS_LAST, lc, NULL, &mc};
    if (model_eval(f->m, cpu, toks, 1, &oc, &err)) {
        result(0, name, "CPU: %s", err.msg);
        goto out;
    }
    double worst = 0;
    for (int k = 0; k < c.n_st; k++) {
        printf("info: matvec %-14s x%-3d worst max|diff|/max|ref| %.3g (layer %lld)\n",
               c.st[k].what, c.st[k].n, c.st[k].worst, (long long)c.st[k].layer);
        worst = fmax(worst, c.st[k].worst);
    }
    result(!c.failed && c.n_st > 0 && worst <= 1e-4, name,
           "%d products named, worst relative |diff| %.3g (need <= 1e-4)", c.n_st, worst);
    for (int64_t l = 0; l < hp->n_layer && l < 64; l++)
        for (int w = 0; w < 4; w++) {
            const float *a = c.rows[0][l][w], *b = c.rows[1][l][w];
            if (!a || !b) {
                printf("info: layer %lld %s: missing capture (cpu %d gpu %d)\n", (long long)l,
                       k_what[w], a != NULL, b != NULL);
                continue;
            }
            int64_t n = (w == 1 || w == 3) ? hp->n_hc * D : D;
            double mx = 0, den = 0;
            for (int64_t i = 0; i < n; i++) {
                mx = fmax(mx, fabs((double)a[i] - (double)b[i]));
                den = fmax(den, fabs((double)a[i]));
            }
            printf("info: layer %lld %-8s GPU vs CPU max|diff| %.3g (max|ref| %.3g, rel %.3g)\n",
                   (long long)l, k_what[w], mx, den, den > 0 ? mx / den : mx);
        }
    printf("info: logits of token 0: GPU vs CPU max|diff| %.3g\n", max_abs(lg, lc, V, NULL));
out:
    for (int b = 0; b < 2; b++)
        for (int l = 0; l < 64; l++)
            for (int w = 0; w < 4; w++) free(c.rows[b][l][w]);
    cpu_buf_free(&c.buf);
    free(c.yref);
    if (g.host) gpu_state_free(&g);
    model_state_free(cpu);
    free(lg);
    free(lc);
}

/* CUDA graph (issue #7): the same free-running sequence op by op must give bit-identical
 * logits (the graph replays the same kernels with the same arguments); prints both decode
 * speeds and how often the graph was instantiated versus updated in place. no_branches: the
 * sequence through a graph captured without branches instead (DS4_CUDA_BRANCHES=0, one stream,
 * cuda_fwd_branches), which must equal the branched graph's logits (lg) bit for bit too. */
static void graph_case(fixture *f, const int32_t *toks, const float *lg, double t_graph,
                       int no_branches) {
    const char *name = no_branches ? "synthetic flash q2: decode graph without branches equals with branches"
                                   : "synthetic flash q2: CUDA graph step equals op-by-op launches";
    ds4_error err = {0};
    int64_t V = model_get_hparams(f->m)->n_vocab, rows = SYN_T + SYN_N;
    float *lo = malloc((size_t)(rows * V) * sizeof(float));
    gpu_state g = {0};
    if (!lo || gpu_state_create(&g, f, rows, &err)) {
        result(0, name, "state: %s", lo ? err.msg : "out of memory");
        free(lo);
        return;
    }
    const char *was = getenv("DS4_CUDA_BRANCHES");
    char keep[16];
    snprintf(keep, sizeof keep, "%s", was ? was : "");
    if (no_branches) setenv("DS4_CUDA_BRANCHES", "0", 1);
    else cuda_state_set_graph(g.dev, false);
    cuda_state_set_batch(g.dev, false); /* lg's prompt ran token by token too */
    model_eval_opts o = {MODEL_LOGITS_ALL, lo, NULL, NULL};
    double t1 = 0;
    int rc = cuda_model_eval(f->cm, g.dev, toks, SYN_T, &o, &err) != DS4_OK;
    if (!rc) t1 = now_s();
    for (int64_t i = 0; !rc && i < SYN_N; i++) {
        model_eval_opts od = {MODEL_LOGITS_LAST, lo + (SYN_T + i) * V, NULL, NULL};
        rc = cuda_model_eval(f->cm, g.dev, &toks[SYN_T + i], 1, &od, &err) != DS4_OK;
    }
    if (was) setenv("DS4_CUDA_BRANCHES", keep, 1);
    else unsetenv("DS4_CUDA_BRANCHES");
    if (rc) {
        result(0, name, "eval: %s", err.msg);
    } else {
        double t_op = now_s() - t1;
        int64_t at = 0;
        double e = max_abs(lo, lg, rows * V, &at);
        if (!no_branches)
            printf("info: decode %.1f tok/s with the CUDA graph, %.1f tok/s op by op (%d steps, "
                   "logits downloaded each step)\n", (double)SYN_N / t_graph, (double)SYN_N / t_op,
                   SYN_N);
        result(e == 0.0, name, "%lld positions, max |diff| %.3g (must be 0)", (long long)rows, e);
    }
    gpu_state_free(&g);
    free(lo);
}

/* Greedy decode without the logits (model_eval_opts.token_out, issue #7): head + argmax on the
 * device, only the id downloaded, as the graph (graph on) and op by op (off). The same kernels
 * give the free-running run's logits bit for bit, so every id must equal their host argmax. */
static void greedy_case(fixture *f, const int32_t *toks, const float *lg) {
    int64_t V = model_get_hparams(f->m)->n_vocab;
    for (int graph = 1; graph >= 0; graph--) {
        const char *name = graph ? "synthetic flash q2: token_out (head + argmax on the device, graph) "
                                   "equals the host argmax of the logits"
                                 : "synthetic flash q2: token_out op by op equals the host argmax";
        ds4_error err = {0};
        gpu_state g = {0};
        if (gpu_state_create(&g, f, SYN_T + SYN_N, &err)) {
            result(0, name, "state: %s", err.msg);
            continue;
        }
        cuda_state_set_batch(g.dev, false);
        cuda_state_set_graph(g.dev, graph);
        int bad = 0, rc = 0;
        int64_t first_bad = -1;
        for (int64_t i = -1; !rc && i < SYN_N; i++) { /* i = -1: the prompt's last token */
            int32_t tok = -2;
            model_eval_opts o = {MODEL_LOGITS_NONE, NULL, NULL, NULL, &tok};
            rc = i < 0 ? cuda_model_eval(f->cm, g.dev, toks, SYN_T, &o, &err) != DS4_OK
                       : cuda_model_eval(f->cm, g.dev, &toks[SYN_T + i], 1, &o, &err) != DS4_OK;
            const float *row = lg + (SYN_T + i) * V;
            int32_t want = -1;
            for (int64_t k = 0; k < V; k++)
                if (isfinite(row[k]) && (want < 0 || row[k] > row[want])) want = (int32_t)k;
            if (!rc && tok != want) {
                bad++;
                if (first_bad < 0) first_bad = SYN_T + i;
            }
        }
        if (rc)
            result(0, name, "eval: %s", err.msg);
        else
            result(bad == 0, name, "%d positions, %d differ (first at position %lld)", SYN_N + 1, bad,
                   (long long)first_bad);
        gpu_state_free(&g);
    }
}

/* Per-op breakdown of a decode step (issue #7): 8 steps op by op with CUDA events after every
 * op (each layer queued behind a gate: GPU time), summed per call site (tag of
 * cuda_state_profile_site: line of src/cuda/forward_cuda.c and name); printed, never asserted. */
#define PROF_STEPS 8
#define PROF_LINES 4096
typedef struct prof_acc {
    double ms[PROF_LINES];
    int n[PROF_LINES];
} prof_acc;

static void prof_add(void *u, int line, float ms) {
    prof_acc *a = u;
    if (line < 0 || line >= PROF_LINES) return;
    a->ms[line] += ms;
    a->n[line]++;
}

static void prof_case(fixture *f, const int32_t *toks) {
    ds4_error err = {0};
    int64_t V = model_get_hparams(f->m)->n_vocab;
    float *l = malloc((size_t)V * sizeof(float));
    prof_acc *a = calloc(1, sizeof *a);
    gpu_state g = {0};
    if (!l || !a || gpu_state_create(&g, f, SYN_T + PROF_STEPS, &err)) {
        printf("info: profile: no state: %s\n", err.msg);
        goto out;
    }
    model_eval_opts o = {MODEL_LOGITS_LAST, l, NULL, NULL};
    if (cuda_model_eval(f->cm, g.dev, toks, SYN_T, &o, &err) ||
        cuda_state_set_profile(g.dev, true, &err))
        goto fail;
    for (int i = 0; i < PROF_STEPS; i++)
        if (cuda_model_eval(f->cm, g.dev, &toks[SYN_T + i], 1, &o, &err)) goto fail;
    if (cuda_state_profile_collect(g.dev, prof_add, a, &err)) goto fail;
    double total = 0;
    for (int i = 0; i < PROF_LINES; i++) total += a->ms[i];
    printf("info: profile of %d decode steps op by op (synthetic q2, 4 layers): %.3f ms per step "
           "in ops; top call sites (forward_cuda.c line: ms per step, share, calls per step):\n",
           PROF_STEPS, total / PROF_STEPS);
    for (int k = 0; k < 24; k++) {
        int best = -1;
        for (int i = 0; i < PROF_LINES; i++)
            if (a->n[i] && (best < 0 || a->ms[i] > a->ms[best])) best = i;
        if (best < 0) break;
        int line = 0;
        const char *site = cuda_state_profile_site(g.dev, best, &line);
        printf("info:   line %4d %.40s: %.4f ms  %5.1f%%  x%.1f\n", line, site ? site : "?",
               a->ms[best] / PROF_STEPS,
               total > 0 ? 100.0 * a->ms[best] / total : 0.0, (double)a->n[best] / PROF_STEPS);
        a->n[best] = 0;
    }
    goto out;
fail:
    printf("info: profile: %s\n", err.msg);
out:
    if (g.host) gpu_state_free(&g);
    free(l);
    free(a);
}

/* Where a batched prefill of n tokens spends its time (forward_chunk.c call sites). */
static void prof_chunk_case(fixture *f, const int32_t *toks, int64_t n) {
    ds4_error err = {0};
    int64_t V = model_get_hparams(f->m)->n_vocab;
    float *l = malloc((size_t)V * sizeof(float));
    prof_acc *a = calloc(1, sizeof *a);
    gpu_state g = {0};
    if (!l || !a || gpu_state_create(&g, f, n, &err)) {
        printf("info: chunk profile: no state: %s\n", err.msg);
        goto out;
    }
    cuda_state_set_batch(g.dev, true);
    model_eval_opts o = {MODEL_LOGITS_LAST, l, NULL, NULL};
    if (cuda_state_set_profile(g.dev, true, &err) ||
        cuda_model_eval(f->cm, g.dev, toks, n, &o, &err) ||
        cuda_state_profile_collect(g.dev, prof_add, a, &err)) {
        printf("info: chunk profile: %s\n", err.msg);
        goto out;
    }
    double total = 0;
    for (int i = 0; i < PROF_LINES; i++) total += a->ms[i];
    printf("info: profile of a batched prefill of %lld tokens (synthetic q2, 4 layers): %.3f ms; "
           "top call sites (forward_chunk.c line: ms, share, calls):\n", (long long)n, total);
    for (int k = 0; k < 24; k++) {
        int best = -1;
        for (int i = 0; i < PROF_LINES; i++)
            if (a->n[i] && (best < 0 || a->ms[i] > a->ms[best])) best = i;
        if (best < 0) break;
        int line = 0;
        const char *site = cuda_state_profile_site(g.dev, best, &line);
        printf("info:   line %4d %.40s: %.4f ms  %5.1f%%  x%d\n", line, site ? site : "?",
               a->ms[best], total > 0 ? 100.0 * a->ms[best] / total : 0.0, a->n[best]);
        a->n[best] = 0;
    }
out:
    if (g.host) gpu_state_free(&g);
    free(l);
    free(a);
}

/* ---- Routed experts in pinned host memory (issue #7, cuda_model_opts) -------------------- */

/* HX_T prompt tokens (token by token, or batched) then HX_N decode steps of fixed tokens, on a
 * model opened with gpu_layers_experts = keep (the first n_layer - keep layers' experts in
 * mapped host memory). The kernels read the same bytes from either place, so the logits must be
 * bit-identical to all on the device. */
#define HX_T 64
#define HX_N 16
static int host_experts_run(fixture *f, int keep, int batch, const int32_t *toks, float *l,
                            double *t_pre, double *t_dec, int64_t *got_keep, uint64_t *host_bytes,
                            ds4_error *err) {
    int64_t V = model_get_hparams(f->m)->n_vocab;
    cuda_model_opts co = {.gpu_layers_experts = keep, .reserve_bytes = 0};
    cuda_model *cm = NULL;
    model_state *host = NULL;
    cuda_state *dev = NULL;
    int rc = 1;
    if (cuda_model_open_ex(&cm, f->m, f->g, 0, &co, NULL, 0, err) ||
        model_state_create(&host, f->m, HX_T + HX_N, err) ||
        cuda_state_create(&dev, cm, host, err))
        goto out;
    *got_keep = cuda_model_gpu_layers_experts(cm);
    *host_bytes = cuda_model_host_expert_bytes(cm);
    cuda_state_set_batch(dev, batch != 0);
    double t0 = now_s();
    model_eval_opts o = {MODEL_LOGITS_ALL, l, NULL, NULL};
    if (cuda_model_eval(cm, dev, toks, HX_T, &o, err) || cuda_sync(err)) goto out;
    double t1 = now_s();
    for (int64_t i = 0; i < HX_N; i++) {
        model_eval_opts od = {MODEL_LOGITS_LAST, l + (HX_T + i) * V, NULL, NULL};
        if (cuda_model_eval(cm, dev, &toks[HX_T + i], 1, &od, err)) goto out;
    }
    *t_pre = t1 - t0;
    *t_dec = now_s() - t1;
    rc = 0;
out:
    cuda_state_free(dev);
    model_state_free(host);
    cuda_model_close(cm);
    return rc;
}

static void host_experts_case(fixture *f) {
    const model_hparams *hp = model_get_hparams(f->m);
    int64_t V = hp->n_vocab, L = hp->n_layer, rows = HX_T + HX_N;
    int32_t toks[HX_T + HX_N];
    rand_tokens(toks, rows, V);
    float *ref = malloc((size_t)(rows * V) * sizeof(float));
    float *got = malloc((size_t)(rows * V) * sizeof(float));
    ds4_error err = {0};
    if (!ref || !got) {
        result(0, "host experts", "out of memory");
        goto out;
    }
    for (int batch = 0; batch < 2; batch++) {
        const char *path = batch ? "batched prefill" : "token-by-token prefill";
        double tp0, td0, tp, td;
        int64_t k0;
        uint64_t hb0;
        if (host_experts_run(f, (int)L, batch, toks, ref, &tp0, &td0, &k0, &hb0, &err)) {
            result(0, "host experts: all on the device", "%s: %s", path, err.msg);
            continue;
        }
        printf("info: experts all on the device (%s): prefill %d tok in %.3f s, decode %.1f tok/s\n",
               path, HX_T, tp0, HX_N / td0);
        int keeps[2] = {(int)L - 1, 0};
        for (int k = 0; k < 2; k++) {
            char name[160];
            snprintf(name, sizeof name, "host experts: %lld of %lld layers' experts in pinned host "
                     "memory, %s + %d decode steps, logits bit-identical to all on the device",
                     (long long)(L - keeps[k]), (long long)L, path, HX_N);
            int64_t kk;
            uint64_t hb;
            if (host_experts_run(f, keeps[k], batch, toks, got, &tp, &td, &kk, &hb, &err)) {
                result(0, name, "%s", err.msg);
                continue;
            }
            printf("info: experts of %lld layers on the host (%.1f MiB pinned, %s): prefill %d tok "
                   "in %.3f s, decode %.1f tok/s\n", (long long)(L - kk), (double)hb / (1 << 20),
                   path, HX_T, tp, HX_N / td);
            int64_t at = 0;
            double e = max_abs(got, ref, rows * V, &at);
            result(kk == keeps[k] && k0 == L && hb > 0 && hb0 == 0 && e == 0.0, name,
                   "layers on the device %lld (want %d), max |diff| %.3g at position %lld (must "
                   "be 0)", (long long)kk, keeps[k], e, (long long)(at / V));
        }
    }
    /* Auto-fit: a reserve that leaves room for all but half of layer 0's experts moves
     * exactly that layer to the host; one larger than the card is refused, naming sizes. */
    {
        const layer_weights *L0 = &f->m->w.layers[0];
        uint64_t lb = 0, data = gguf_file_bytes(f->g) - gguf_data_offset(f->g);
        const experts_mat *es[3] = {&L0->gate_exps, &L0->up_exps, &L0->down_exps};
        for (int i = 0; i < 3; i++) lb += es[i]->expert_bytes * (uint64_t)es[i]->n_expert;
        size_t fr = 0;
        cuda_model *cm = NULL;
        if (cuda_mem_info(&fr, NULL, &err) == DS4_OK && fr > data + CUDA_FIT_MARGIN_BYTES) {
            cuda_model_opts ca = {.gpu_layers_experts = -1,
                                  .reserve_bytes = fr - data - CUDA_FIT_MARGIN_BYTES + lb / 2};
            ds4_status sa = cuda_model_open_ex(&cm, f->m, f->g, 0, &ca, NULL, 0, &err);
            int64_t kk = sa ? -1 : cuda_model_gpu_layers_experts(cm);
            result(sa == DS4_OK && kk == L - 1,
                   "host experts: auto-fit moves the first layer's experts when half of them "
                   "does not fit", "status %d (%s), layers on the device %lld (want %lld), "
                   "%.1f MiB pinned", (int)sa, sa ? err.msg : "ok", (long long)kk, (long long)(L - 1),
                   (double)cuda_model_host_expert_bytes(cm) / (1 << 20));
            cuda_model_close(cm);
            cm = NULL;
        }
        cuda_model_opts cb = {.gpu_layers_experts = -1, .reserve_bytes = 1ull << 50};
        ds4_status sb = cuda_model_open_ex(&cm, f->m, f->g, 0, &cb, NULL, 0, &err);
        result(sb == DS4_ERR_NOMEM && !cm && strstr(err.msg, "even with the routed experts"),
               "host experts: auto-fit refuses a model that cannot fit at all",
               "status %d: %s", (int)sb, err.msg);
        cuda_model_close(cm);
    }
    /* Out-of-range counts are refused before anything is allocated. */
    cuda_model *bad = NULL;
    cuda_model_opts co = {.gpu_layers_experts = (int)L + 1};
    ds4_status st = cuda_model_open_ex(&bad, f->m, f->g, 0, &co, NULL, 0, &err);
    result(st == DS4_ERR_INVALID_ARG && !bad, "host experts: gpu_layers_experts > n_layer is refused",
           "status %d: %s", (int)st, err.msg);
    cuda_model_close(bad);
out:
    free(ref);
    free(got);
}

static void synth_case(const char *path) {
    const char *name = "synthetic flash q2 (4 layers, 16 experts)";
    ds4_error err = {0};
    fixture f;
    if (fixture_open(&f, path, &err)) {
        result(0, name, "open %s: %s", path, err.msg);
        fixture_close(&f);
        return;
    }
    const model_hparams *hp = model_get_hparams(f.m);
    int64_t V = hp->n_vocab, rows = SYN_T + SYN_N, n_step = SYN_T / SYN_STEP;
    int32_t *toks = malloc((size_t)rows * sizeof(int32_t));
    float *lc = malloc((size_t)(rows * V) * sizeof(float));
    float *lg = malloc((size_t)(rows * V) * sizeof(float));
    float *ln = malloc((size_t)(rows * V) * sizeof(float));
    float *ls = malloc((size_t)(n_step * V) * sizeof(float));
    float *lcs = malloc((size_t)(n_step * V) * sizeof(float));
    uint8_t *pay = NULL;
    rand_tokens(toks, SYN_T, V);
    synth_diagnose(&f, toks);
    host_experts_case(&f);
    model_state *cpu = NULL;
    gpu_state g = {0}, g2 = {0};
    if (model_state_create(&cpu, f.m, rows, &err) || gpu_state_create(&g, &f, rows, &err) ||
        gpu_state_create(&g2, &f, rows, &err)) {
        result(0, name, "states: %s", err.msg);
        goto out;
    }
    /* CPU reference, free-running (prompt in one call, then greedy; the GPU gets the same
     * tokens so a flipped choice cannot change the rest of the sequence). */
    double t0 = now_s();
    if (cpu_run(f.m, toks, lc, 1, &err)) goto fail;
    double t_cpu = now_s() - t0;
    /* Same state: every SYN_STEP positions, the CPU state before token p goes to the GPU. */
    for (int64_t k = 0; k < n_step; k++) {
        int64_t p = k * SYN_STEP;
        size_t n = model_state_serialized_bytes(cpu);
        uint8_t *q = realloc(pay, n);
        if (!q) goto fail;
        pay = q;
        if (model_state_serialize(cpu, pay, n, &err) ||
            model_state_deserialize(g2.host, pay, n, &err))
            goto fail;
        cuda_state_host_changed(g2.dev);
        model_eval_opts og = {MODEL_LOGITS_LAST, ls + k * V, NULL, NULL};
        model_eval_opts oc = {MODEL_LOGITS_LAST, lcs + k * V, NULL, NULL};
        if (cuda_model_eval(f.cm, g2.dev, toks + p, 1, &og, &err) ||
            model_eval(f.m, cpu, toks + p, 1, &oc, &err) ||
            model_eval(f.m, cpu, toks + p + 1, SYN_STEP - 1, NULL, &err))
            goto fail;
    }
    /* GPU free-running, token by token (the batched prompt is checked below against it). */
    cuda_state_set_batch(g.dev, false);
    model_eval_opts og = {MODEL_LOGITS_ALL, lg, NULL, NULL};
    if (cuda_model_eval(f.cm, g.dev, toks, SYN_T, &og, &err)) goto fail;
    double t1 = now_s();
    for (int64_t i = 0; i < SYN_N; i++) {
        model_eval_opts od = {MODEL_LOGITS_LAST, lg + (SYN_T + i) * V, NULL, NULL};
        if (cuda_model_eval(f.cm, g.dev, &toks[SYN_T + i], 1, &od, &err)) goto fail;
    }
    double t_dec = now_s() - t1;
    graph_case(&f, toks, lg, t_dec, 0);
    graph_case(&f, toks, lg, t_dec, 1);
    greedy_case(&f, toks, lg);
    prof_case(&f, toks);
    prof_chunk_case(&f, toks, SYN_T);
    {
        int32_t *tl = malloc(2048 * sizeof(int32_t));
        if (tl) {
            rand_tokens(tl, 2048, V);
            prof_chunk_case(&f, tl, 2048);
        }
        free(tl);
    }
    /* Noise floor: the CPU again with every element of layer 0's attn_norm one ULP up or down
     * (fixed pseudo-random signs; the host copy only, the GPU keeps its own). */
    float *w0 = f.m->w.layers[0].attn_norm;
    int64_t D = hp->n_embd;
    float *keep = malloc((size_t)D * sizeof(float));
    if (!keep) goto fail;
    memcpy(keep, w0, (size_t)D * sizeof(float));
    uint64_t r = 99;
    for (int64_t i = 0; i < D; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        w0[i] = nextafterf(w0[i], (r >> 63) ? INFINITY : -INFINITY);
    }
    int nrc = cpu_run(f.m, toks, ln, 0, &err);
    memcpy(w0, keep, (size_t)D * sizeof(float));
    free(keep);
    if (nrc) goto fail;
    printf("info: %s: CPU %lld tokens in %.2f s; GPU decode %.1f tok/s (%d steps, logits "
           "downloaded each step)\n", name, (long long)rows, t_cpu, (double)SYN_N / t_dec, SYN_N);
    int64_t ag_g = top1_agree(lg, lc, rows, V), ag_n = top1_agree(ln, lc, rows, V);
    int64_t ag_s = top1_agree(ls, lcs, n_step, V);
    double e_g = max_abs(lg, lc, rows * V, NULL), e_n = max_abs(ln, lc, rows * V, NULL);
    double e_s = max_abs(ls, lcs, n_step * V, NULL);
    /* The prompt batched (cuda_state_set_batch, one call) vs lg's rows 0..SYN_T (token by token). */
    {
        gpu_state g3;
        float *lt = malloc((size_t)(SYN_T * V) * sizeof(float));
        if (!lt || gpu_state_create(&g3, &f, rows, &err)) {
            free(lt);
            goto fail;
        }
        cuda_state_set_batch(g3.dev, true);
        model_eval_opts ot = {MODEL_LOGITS_ALL, lt, NULL, NULL};
        double tb0 = now_s();
        ds4_status st3 = cuda_model_eval(f.cm, g3.dev, toks, SYN_T, &ot, &err);
        if (!st3) st3 = cuda_sync(&err);
        printf("info: synthetic flash q2: batched prefill of %d tokens in %.3f s\n", SYN_T,
               now_s() - tb0);
        gpu_state_free(&g3);
        if (st3) {
            free(lt);
            goto fail;
        }
        double e_b = max_abs(lg, lt, SYN_T * V, NULL);
        int64_t ag_b = top1_agree(lg, lt, SYN_T, V);
        double e_bc = max_abs(lc, lt, SYN_T * V, NULL);
        int64_t ag_bc = top1_agree(lc, lt, SYN_T, V);
        free(lt);
        /* The chunk's products are cpu_matmul's bits and its other ops the CPU's steps with
         * the same exp / cos / sin (cpu/refmath.h): the logits are the CPU's (h6, session 4). */
        result(e_bc == 0 && ag_bc == SYN_T, "synthetic flash q2: batched prefill bit-identical to the CPU",
               "max |diff| %.3g over %d positions (must be 0), top-1 %lld / %d equal", e_bc, SYN_T,
               (long long)ag_bc, SYN_T);
        result(e_n > 0 && e_b <= 2 * e_n,
               "synthetic flash q2: batched prefill vs token by token within twice the noise floor",
               "max |diff| %.3g over %d positions (floor %.3g), top-1 %lld equal", e_b, SYN_T, e_n,
               (long long)ag_b);
    }
    diff_profile("free-running GPU vs CPU", lg, lc, rows, V);
    diff_profile("CPU vs CPU with a norm weight one ULP off (noise floor)", ln, lc, rows, V);
    printf("info: free-running over %lld positions: GPU vs CPU top-1 %lld (%.2f%%), max |diff| "
           "%.3g; noise floor: top-1 %lld (%.2f%%), max |diff| %.3g; one step from the same "
           "state (%lld positions): top-1 %lld, max |diff| %.3g\n", (long long)rows,
           (long long)ag_g, 100.0 * (double)ag_g / (double)rows, e_g, (long long)ag_n,
           100.0 * (double)ag_n / (double)rows, e_n, (long long)n_step, (long long)ag_s, e_s);
    result(e_n > 0 && e_g <= 2 * e_n && e_s <= 2 * e_n,
           "synthetic flash q2: GPU vs CPU logits within twice the CPU's own noise floor",
           "free-running max |diff| %.3g, same state %.3g, floor %.3g", e_g, e_s, e_n);
    /* Every decode product sums in the CPU's order (dense: matvec_dense.cu, h1 session 4;
     * routed experts, attention, the rest) with the CPU's exp / log: the GPU decode is the
     * CPU's, token for token. */
    result(e_g == 0 && e_s == 0 && ag_g == rows && ag_s == n_step,
           "synthetic flash q2: GPU decode bit-identical to the CPU",
           "free-running max |diff| %.3g (must be 0), top-1 %lld / %lld; same state max |diff| "
           "%.3g, top-1 %lld / %lld", e_g, (long long)ag_g, (long long)rows, e_s,
           (long long)ag_s, (long long)n_step);
    /* Top-1 where the CPU's top-2 margin exceeds twice the floor at that position: no excuse
     * to differ there. */
    int64_t clear = 0, clear_ok = 0;
    for (int pass = 0; pass < 2; pass++) {
        const float *ref = pass ? lcs : lc, *got = pass ? ls : lg;
        int64_t n = pass ? n_step : rows;
        for (int64_t q = 0; q < n; q++) {
            const float *row = ref + q * V;
            int64_t p = pass ? q * SYN_STEP : q;
            double thr = 2 * max_abs(ln + p * V, lc + p * V, V, NULL);
            int32_t b = argmax(row, V);
            float second = -INFINITY;
            for (int64_t i = 0; i < V; i++) if (i != b && row[i] > second) second = row[i];
            if (row[b] - second <= thr) continue;
            clear++;
            clear_ok += argmax(got + q * V, V) == b;
        }
    }
    result(clear > 0 && clear_ok * 100 >= clear * 99,
           "synthetic flash q2: top-1 agreement where the CPU's margin is clear of the floor",
           "%lld / %lld positions (need >= 99%%; free-running and same-state rows; margin > twice "
           "the floor's max |diff| at the position)",
           (long long)clear_ok, (long long)clear);
    result(ag_g * 100 >= rows * 99 || ag_g + rows / 20 >= ag_n,
           "synthetic flash q2: free-running GPU vs CPU top-1 agreement, all positions",
           "%.2f%% (need >= 99%%, or within 5 points of the noise floor's %.2f%%)",
           100.0 * (double)ag_g / (double)rows, 100.0 * (double)ag_n / (double)rows);
    goto out;
fail:
    result(0, name, "eval: %s", err.msg);
out:
    if (g.host) gpu_state_free(&g);
    if (g2.host) gpu_state_free(&g2);
    model_state_free(cpu);
    free(pay);
    free(toks);
    free(lc);
    free(lg);
    free(ln);
    free(ls);
    free(lcs);
    fixture_close(&f);
}

/* Every product of a batched prefill (tiny-v4 `cs` prompt, one call) recomputed on the CPU
 * from the GPU's input rows (verification hook, forward_chunk.c): cuda_matmul and the F32
 * mixes are bit-identical to cpu_matmul, so every worst difference must be 0. */
static void chunk_check_case(fixture *f, st_file *gf, const char *cs) {
    char name[160];
    snprintf(name, sizeof name, "tiny-v4 f32 %s: batched prefill products recomputed on the CPU",
             cs);
    ds4_error err = {0};
    golden_case c;
    if (golden_get(gf, cs, &c)) {
        result(0, name, "golden tensors of case '%s' missing", cs);
        return;
    }
    const model_hparams *hp = model_get_hparams(f->m);
    check_ctx k;
    memset(&k, 0, sizeof k);
    k.m = f->m;
    k.n_layer = hp->n_layer;
    float *lg = malloc((size_t)(hp->n_vocab) * sizeof(float));
    gpu_state g = {0};
    if (!lg || gpu_state_create(&g, f, c.T, &err)) {
        result(0, name, "state: %s", err.msg);
        goto out;
    }
    cuda_state_set_batch(g.dev, true);
    cuda_state_set_check(g.dev, on_mv, &k);
    model_eval_opts o = {MODEL_LOGITS_LAST, lg, NULL, NULL};
    if (cuda_model_eval(f->cm, g.dev, c.tokens, c.T, &o, &err)) {
        result(0, name, "eval: %s", err.msg);
        goto out;
    }
    double worst = 0;
    int n = 0;
    for (int i = 0; i < k.n_st; i++) {
        n += k.st[i].n;
        if (k.st[i].worst > 0)
            printf("info: %s: %-14s x%-5d worst max|diff|/max|ref| %.3g (layer %lld)\n", name,
                   k.st[i].what, k.st[i].n, k.st[i].worst, (long long)k.st[i].layer);
        worst = fmax(worst, k.st[i].worst);
    }
    result(!k.failed && k.n_st > 0 && worst == 0, name, "%d rows of %d products, worst relative "
           "|diff| %.3g (must be 0)", n, k.n_st, worst);
out:
    if (g.host) {
        cuda_state_set_check(g.dev, NULL, NULL);
        gpu_state_free(&g);
    }
    cpu_buf_free(&k.buf);
    free(k.yref);
    free(lg);
}

/* ---- Sampling on the device (issue #7, cuda/sample_dev.cu; h4, session 3) ------------------ */

/* The prompt of golden case cs on a GPU state and a CPU state, then 24 tokens drawn on each
 * side from the same seed for three parameter sets: on the GPU by cuda_state_sample (head and
 * draw on the device, the id downloaded), on the CPU by ds4_sampler_sample on the CPU engine's
 * logits. The device's token must equal ds4_sampler_sample on the GPU's own logits (exact, a
 * third sampler) and the CPU engine's token; both sides continue with the GPU's token. */
static void sample_case(fixture *f, st_file *gf, const char *cs) {
    static const float prm[3][6] = {/* T, top_k, top_p, min_p, repeat, frequency */
                                    {1.0f, 0, 1.0f, 0.05f, 1.0f, 0},
                                    {1.5f, 50, 0.9f, 0.0f, 1.0f, 0},
                                    {2.0f, 0, 1.0f, 0.01f, 1.4f, 0.3f}};
    golden_case c;
    char name[128];
    snprintf(name, sizeof name, "tiny-v4 f32 %s: sampling on the device", cs);
    if (golden_get(gf, cs, &c)) {
        result(0, name, "golden tensors of case '%s' missing", cs);
        return;
    }
    const int64_t V = model_get_hparams(f->m)->n_vocab, N = 24;
    float *lc = malloc((size_t)V * sizeof(float)), *lg = malloc((size_t)V * sizeof(float));
    for (int ps = 0; ps < 3 && lc && lg; ps++) {
        ds4_error err = {0};
        ds4_sampling_params p;
        ds4_sampling_params_init(&p);
        p.temperature = prm[ps][0];
        p.top_k = (int32_t)prm[ps][1];
        p.top_p = prm[ps][2];
        p.min_p = prm[ps][3];
        p.repeat_penalty = prm[ps][4];
        p.frequency_penalty = prm[ps][5];
        p.seed = 4242 + (uint64_t)ps;
        ds4_sampler *sd = NULL, *sg = NULL, *sc = NULL;
        cuda_sampler *ds = NULL;
        gpu_state s = {0};
        model_state *cpu = NULL;
        int bad_exact = -1, bad_cpu = -1, n_host = 0;
        int32_t td = -1, tg = -1, tc = -1;
        if (ds4_sampler_create(&sd, &p, (uint32_t)V, &err) || ds4_sampler_create(&sg, &p, (uint32_t)V, &err) ||
            ds4_sampler_create(&sc, &p, (uint32_t)V, &err) || gpu_state_create(&s, f, c.T + N, &err) ||
            model_state_create(&cpu, f->m, c.T + N, &err)) {
            result(0, name, "setup: %s", err.msg);
            goto next;
        }
        model_eval_opts on = {MODEL_LOGITS_NONE, NULL, NULL, NULL};
        model_eval_opts ol = {MODEL_LOGITS_LAST, lc, NULL, NULL};
        if (cuda_model_eval(f->cm, s.dev, c.tokens, c.T - 1, &on, &err) ||
            cuda_model_eval(f->cm, s.dev, c.tokens + c.T - 1, 1, &on, &err) ||
            model_eval(f->m, cpu, c.tokens, c.T, &ol, &err)) {
            result(0, name, "prefill: %s", err.msg);
            goto next;
        }
        for (int64_t i = 0; i < c.T; i++) {
            ds4_sampler_accept(sd, c.tokens[i]);
            ds4_sampler_accept(sg, c.tokens[i]);
            ds4_sampler_accept(sc, c.tokens[i]);
        }
        for (int64_t i = 0; i < N; i++) {
            bool on_host = false;
            if (cuda_state_sample(s.dev, &ds, sd, true, lg, &on_host, &td, &err) ||
                cuda_state_logits(s.dev, false, lg, &err) || ds4_sampler_sample(sg, lg, &tg, &err) ||
                ds4_sampler_sample(sc, lc, &tc, &err)) {
                result(0, name, "step %lld: %s", (long long)i, err.msg);
                goto next;
            }
            n_host += on_host;
            if (td != tg && bad_exact < 0) bad_exact = (int)i;
            if (td != tc && bad_cpu < 0) bad_cpu = (int)i;
            if (bad_exact >= 0) break;
            ds4_sampler_accept(sd, td);
            ds4_sampler_accept(sg, td);
            ds4_sampler_accept(sc, td);
            if (cuda_model_eval(f->cm, s.dev, &td, 1, &on, &err) || model_eval(f->m, cpu, &td, 1, &ol, &err)) {
                result(0, name, "step %lld eval: %s", (long long)i, err.msg);
                goto next;
            }
        }
        char nm[200];
        snprintf(nm, sizeof nm, "%s, params %d: device draw = host draw on the GPU logits", name, ps);
        if (bad_exact < 0) result(1, nm, "%lld tokens equal (%d finished on the host)", (long long)N, n_host);
        else result(0, nm, "step %d: device %d, host sampler %d", bad_exact, td, tg);
        snprintf(nm, sizeof nm, "%s, params %d: GPU session tokens = CPU session tokens", name, ps);
        if (bad_cpu < 0) result(1, nm, "%lld tokens equal", (long long)N);
        else result(0, nm, "first difference at step %d", bad_cpu);
    next:
        cuda_sampler_free(ds);
        ds4_sampler_free(sd);
        ds4_sampler_free(sg);
        ds4_sampler_free(sc);
        if (s.dev || s.host) gpu_state_free(&s);
        model_state_free(cpu);
    }
    free(lc);
    free(lg);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* a crash must not swallow the lines before it */
    if (cuda_device_count() == 0) {
        printf("test-cuda-model: no CUDA device: all model cases skipped (not run)\n");
        printf("0 passed, 0 failed, 3 skipped\n");
        return 0;
    }
    char desc[256];
    ds4_error err = {0};
    if (cuda_device_describe(0, desc, sizeof desc, &err) == DS4_OK) printf("device 0: %s\n", desc);
    char tiny[1024], syn[1024];
    snprintf(tiny, sizeof tiny, "%s/ds4-cuda-tiny-f32-%d.gguf", tmp_dir(), (int)getpid());
    const char *sh = getenv("DS4_SHARED");
    char gpath[1024];
    snprintf(gpath, sizeof gpath, "%s/testdata/tiny-v4/golden_topk16.safetensors", sh && *sh ? sh : "../shared");
    st_file *gf = NULL;
    fixture f;
    if (convert_tiny(tiny, &err)) {
        result(0, "tiny-v4 f32", "convert: %s", err.msg);
    } else if (st_open(&gf, gpath, &err)) {
        result(0, "tiny-v4 f32", "golden %s: %s", gpath, err.msg);
    } else if (fixture_open(&f, tiny, &err)) {
        result(0, "tiny-v4 f32", "open: %s", err.msg);
        fixture_close(&f);
    } else {
        golden_case_run(&f, gf, "short");
        golden_case_run(&f, gf, "window");
        chunk_case(&f, gf, "short");
        chunk_case(&f, gf, "window"); /* the indexer near-tie at position 67 (forward_chunk.c) */
        chunk_layers_case(&f, gf, "window");
        chunk_check_case(&f, gf, "window");
        snapshot_cases(&f, gf);
        graph_bounds_case(&f);
        sample_case(&f, gf, "short");
        fixture_close(&f);
    }
    st_close(gf);
    unlink(tiny);
    const char *sp = getenv("DS4_CUDA_SYN_GGUF");
    if (sp && *sp) {
        synth_case(sp);
    } else {
        snprintf(syn, sizeof syn, "%s/ds4-cuda-syn-q2-%d.gguf", tmp_dir(), (int)getpid());
        if (convert_synth(syn, &err)) result(0, "synthetic flash q2", "convert: %s", err.msg);
        else synth_case(syn);
        unlink(syn);
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
