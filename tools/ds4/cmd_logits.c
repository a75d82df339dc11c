/*
 * tools/ds4/cmd_logits.c — `ds4 --model M --prompt-tokens FILE --dump-logits OUT.safetensors`:
 * evaluates token ids from position 0 and writes the logits of every prompt position, a greedy
 * continuation and (with --dump-layers) the per-layer activations as an F32 safetensors file
 * with the tensor names and meanings of tiny-v4's golden files (testdata/tiny-v4/README.md).
 * The tool to compare an engine against reference logits. Owns its flags and the safetensors
 * writer; computes nothing itself.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "ds4.h"
#include "model/engine.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ds4 --model M.gguf --prompt-tokens FILE --dump-logits OUT.safetensors\n"
            "           [--decode N] [--prefill-chunk N] [--threads N] [--ctx N]\n"
            "           [--indexer-topk K] [--dump-layers] [--dump-mtp] [--exact-activations]\n"
            "  FILE holds token ids separated by whitespace or commas.\n"
            "  Writes prefill_logits [T, vocab], decode_tokens [N] (I32), decode_logits [N, vocab]\n"
            "  (greedy: token i is the argmax of the previous logits) and, with --dump-layers,\n"
            "  layerL.{attn_out,h_attn,ffn_out,h_out} for the prompt positions, and with --dump-mtp\n"
            "  mtp_logits [T-1, vocab] (MTP block at p fed the final HC state at p and token p+1).\n"
            "  --exact-activations (checking mode): quantized weights are dotted with f32\n"
            "  activations, giving the logits of the same model dequantized to F32; slower.\n");
}

/* ---- Token file ---------------------------------------------------------------------------- */

/* Parses ids separated by whitespace and/or commas. Returns 0 or prints why and returns 1. */
static int parse_tokens(const char *path, int32_t **out, uint32_t *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ds4: cannot open --prompt-tokens file %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t cap = 256, n = 0, line = 1;
    int32_t *ids = malloc(cap * sizeof *ids);
    char word[64];
    size_t wl = 0;
    int c, rc = 0;
    if (!ids) goto out_nomem;
    do {
        c = fgetc(f);
        if (c != EOF && !isspace(c) && c != ',') {
            if (wl + 1 >= sizeof word) {
                fprintf(stderr, "ds4: %s:%zu: token id too long\n", path, line);
                rc = 1;
                break;
            }
            word[wl++] = (char)c;
            continue;
        }
        if (wl > 0) {
            word[wl] = '\0';
            char *end;
            errno = 0;
            long long v = strtoll(word, &end, 10);
            if (*end || errno || v < 0 || v > INT32_MAX) {
                fprintf(stderr, "ds4: %s:%zu: '%s' is not a token id (a non-negative integer)\n", path,
                        line, word);
                rc = 1;
                break;
            }
            if (n == cap) {
                int32_t *p = n < (1u << 28) ? realloc(ids, 2 * cap * sizeof *ids) : NULL;
                if (!p) goto out_nomem;
                ids = p;
                cap *= 2;
            }
            ids[n++] = (int32_t)v;
            wl = 0;
        }
        if (c == '\n') line++;
    } while (c != EOF);
    fclose(f);
    if (rc == 0 && n == 0) {
        fprintf(stderr, "ds4: %s holds no token ids\n", path);
        rc = 1;
    }
    if (rc) {
        free(ids);
        return rc;
    }
    *out = ids;
    *n_out = (uint32_t)n;
    return 0;
out_nomem:
    fclose(f);
    free(ids);
    fprintf(stderr, "ds4: out of memory reading %s\n", path);
    return 1;
}

/* ---- Safetensors writer ------------------------------------------------------------------------ */

typedef struct out_tensor {
    char name[64];
    const char *dtype;      /* "F32" or "I32" */
    int n_dims;
    uint64_t shape[3];
    const void *data;       /* 4-byte elements, little-endian host */
    uint64_t n_bytes;
} out_tensor;

typedef struct out_list {
    out_tensor *t;
    size_t n, cap;
} out_list;

static int out_add(out_list *l, const char *name, const char *dtype, const void *data, int n_dims,
                   uint64_t d0, uint64_t d1, uint64_t d2) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        out_tensor *p = realloc(l->t, cap * sizeof *p);
        if (!p) return 1;
        l->t = p;
        l->cap = cap;
    }
    out_tensor *t = &l->t[l->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->n_dims = n_dims;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
    t->data = data;
    t->n_bytes = 4;
    for (int i = 0; i < n_dims; i++) t->n_bytes *= t->shape[i];
    return 0;
}

/* safetensors: u64 header length, JSON header (padded with spaces to a multiple of 8 so the
 * data starts aligned), then the tensors back to back in header order. */
static int write_safetensors(const char *path, const out_list *l, const char *meta_json) {
    size_t cap = 1024 + l->n * 160 + strlen(meta_json), len = 0;
    char *h = malloc(cap);
    if (!h) return 1;
    uint64_t off = 0;
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":%s", meta_json);
    for (size_t i = 0; i < l->n; i++) {
        const out_tensor *t = &l->t[i];
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, t->dtype);
        for (int d = 0; d < t->n_dims; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%llu", d ? "," : "", (unsigned long long)t->shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                (unsigned long long)(off + t->n_bytes));
        off += t->n_bytes;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "ds4: cannot create %s: %s\n", path, strerror(errno));
        free(h);
        return 1;
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)len >> (8 * i));
    int bad = fwrite(le, 1, 8, f) != 8 || fwrite(h, 1, len, f) != len;
    for (size_t i = 0; i < l->n && !bad; i++)
        bad = l->t[i].n_bytes && fwrite(l->t[i].data, 1, (size_t)l->t[i].n_bytes, f) != l->t[i].n_bytes;
    bad |= fclose(f) != 0;
    free(h);
    if (bad) fprintf(stderr, "ds4: writing %s failed: %s\n", path, strerror(errno));
    return bad;
}

/* ---- Per-layer capture ------------------------------------------------------------------------- */

static const char *const k_kinds[4] = {"attn_out", "h_attn", "ffn_out", "h_out"};

typedef struct layer_dump {
    uint32_t n_tokens;
    int64_t n_layer;
    float *buf[4];          /* [n_layer] arrays of [T * row_len] per kind, lazily sized */
    int64_t row_len[4];
    int failed;
} layer_dump;

static void on_layer(void *user, int64_t layer, const char *what, int64_t pos0, int64_t n,
                     const float *rows, int64_t row_len) {
    layer_dump *d = user;
    int k = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(what, k_kinds[i]) == 0) k = i;
    if (k < 0 || layer < 0 || layer >= d->n_layer || pos0 < 0 || pos0 + n > d->n_tokens) return;
    if (!d->buf[k]) {
        d->row_len[k] = row_len;
        d->buf[k] = calloc((size_t)(d->n_layer * d->n_tokens * row_len), sizeof(float));
        if (!d->buf[k]) {
            d->failed = 1;
            return;
        }
    }
    if (row_len != d->row_len[k]) {
        d->failed = 1;
        return;
    }
    float *dst = d->buf[k] + ((size_t)layer * d->n_tokens + (size_t)pos0) * (size_t)row_len;
    memcpy(dst, rows, (size_t)(n * row_len) * sizeof(float));
}

/* ---- Mode ---------------------------------------------------------------------------------- */

static int parse_uint(const char *flag, const char *v, uint32_t lo, uint32_t hi, uint32_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = v ? strtoull(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "ds4: %s needs an integer in [%u, %u], got '%s'\n", flag, lo, hi, v ? v : "");
        return 1;
    }
    *out = (uint32_t)x;
    return 0;
}

int ds4_cmd_logits(int argc, char **argv) {
    const char *model_path = NULL, *tokens_path = NULL, *out_path = NULL;
    uint32_t n_decode = 0, chunk = 0, threads = 0, ctx = 0, topk = 0;
    int dump_layers = 0, dump_mtp = 0, exact = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--model") || !strcmp(a, "-m")) model_path = v, i++;
        else if (!strcmp(a, "--prompt-tokens")) tokens_path = v, i++;
        else if (!strcmp(a, "--dump-logits")) out_path = v, i++;
        else if (!strcmp(a, "--decode")) bad = parse_uint(a, v, 0, 1u << 20, &n_decode), i++;
        else if (!strcmp(a, "--prefill-chunk")) bad = parse_uint(a, v, 1, 65536, &chunk), i++;
        else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) bad = parse_uint(a, v, 1, 4096, &threads), i++;
        else if (!strcmp(a, "--ctx")) bad = parse_uint(a, v, 1, UINT32_MAX, &ctx), i++;
        else if (!strcmp(a, "--indexer-topk")) bad = parse_uint(a, v, 1, 1u << 20, &topk), i++;
        else if (!strcmp(a, "--dump-layers")) dump_layers = 1;
        else if (!strcmp(a, "--dump-mtp")) dump_mtp = 1;
        else if (!strcmp(a, "--exact-activations")) exact = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ds4: unknown option '%s' for --dump-logits\n", a);
            bad = 1;
        }
        if (bad) {
            usage(stderr);
            return 2;
        }
    }
    if (!model_path || !tokens_path || !out_path) {
        fprintf(stderr, "ds4: --dump-logits needs --model, --prompt-tokens and --dump-logits\n");
        usage(stderr);
        return 2;
    }
    int32_t *tokens = NULL;
    uint32_t n_tokens = 0;
    if (parse_tokens(tokens_path, &tokens, &n_tokens)) return 1;

    int rc = 1;
    ds4_error err = {0};
    ds4_engine *eng = NULL;
    ds4_session *s = NULL;
    float *prefill = NULL, *decode = NULL, *hc = NULL, *mtp = NULL;
    int32_t *decode_tok = NULL;
    layer_dump dump = {0};
    model_capture cap = {0};
    out_list out = {0};
    ds4_engine_options opt;
    ds4_engine_options_init(&opt);
    opt.n_threads = (int)threads;
    opt.exact_activations = exact != 0;
    if (ds4_engine_open_ex(&eng, model_path, &opt, topk, &err) != DS4_OK) goto out_fail;
    ds4_model_info info;
    ds4_engine_info(eng, &info, NULL);
    uint64_t need = (uint64_t)n_tokens + n_decode;
    if (ctx == 0) ctx = need > info.n_ctx_max ? info.n_ctx_max : (uint32_t)need;
    if (need > ctx) {
        fprintf(stderr, "ds4: %u prompt + %u decode tokens exceed the context %u\n", n_tokens, n_decode, ctx);
        goto out_free;
    }
    if (ds4_session_create(&s, eng, ctx, &err) != DS4_OK) goto out_fail;
    if (ds4_session_set_prefill_chunk(s, chunk ? chunk : n_tokens, &err) != DS4_OK) goto out_fail;
    size_t V = info.n_vocab;
    prefill = malloc((size_t)n_tokens * V * sizeof *prefill);
    decode = malloc(((size_t)n_decode + 1) * V * sizeof *decode);
    decode_tok = malloc(((size_t)n_decode + 1) * sizeof *decode_tok);
    if (!prefill || !decode || !decode_tok) {
        fprintf(stderr, "ds4: cannot allocate logits for %u tokens x %zu vocab\n", n_tokens + n_decode, V);
        goto out_free;
    }
    if (dump_mtp) {
        if (!info.has_mtp) {
            fprintf(stderr, "ds4: --dump-mtp: %s has no MTP block (mtp.0.* tensors)\n", model_path);
            goto out_free;
        }
        const model_hparams *hp = model_get_hparams(ds4_engine_model(eng));
        size_t row = (size_t)(hp->n_hc * hp->n_embd);
        hc = malloc((size_t)n_tokens * row * sizeof *hc);
        mtp = malloc(((size_t)n_tokens + 1) * V * sizeof *mtp);
        if (!hc || !mtp) {
            fprintf(stderr, "ds4: cannot allocate the MTP inputs for %u tokens\n", n_tokens);
            goto out_free;
        }
    }
    if (dump_layers) {
        dump.n_tokens = n_tokens;
        dump.n_layer = info.n_layer;
        cap.user = &dump;
        cap.layer = on_layer;
        ds4_session_set_capture(s, &cap);
    }
    if (ds4_session_eval_tokens_hc(s, tokens, n_tokens, prefill, hc, &err) != DS4_OK) goto out_fail;
    ds4_session_set_capture(s, NULL);
    /* MODEL_MATH §11: row p combines the main model's final HC state at p with token p+1. */
    if (dump_mtp && n_tokens > 1 && ds4_session_eval_mtp(s, hc, tokens + 1, n_tokens - 1, mtp, &err) != DS4_OK)
        goto out_fail;
    if (dump.failed) {
        fprintf(stderr, "ds4: --dump-layers: cannot hold the per-layer rows\n");
        goto out_free;
    }
    const float *last = prefill + (size_t)(n_tokens - 1) * V;
    for (uint32_t i = 0; i < n_decode; i++) {
        decode_tok[i] = ds4_argmax(last, (uint32_t)V);
        if (decode_tok[i] < 0) {
            fprintf(stderr, "ds4: decode step %u: no finite logit to take the argmax of\n", i);
            goto out_free;
        }
        if (ds4_session_eval(s, decode_tok[i], &err) != DS4_OK) goto out_fail;
        const float *l;
        ds4_session_logits(s, &l, NULL);
        memcpy(decode + (size_t)i * V, l, V * sizeof *l);
        last = decode + (size_t)i * V;
    }
    int bad = out_add(&out, "prefill_logits", "F32", prefill, 2, n_tokens, V, 0);
    bad |= out_add(&out, "decode_tokens", "I32", decode_tok, 1, n_decode, 0, 0);
    bad |= out_add(&out, "decode_logits", "F32", decode, 2, n_decode, V, 0);
    if (dump_mtp) bad |= out_add(&out, "mtp_logits", "F32", mtp, 2, n_tokens - 1, V, 0);
    for (int64_t L = 0; dump_layers && L < dump.n_layer; L++) {
        for (int k = 0; k < 4; k++) {
            if (!dump.buf[k]) continue;
            char name[64];
            snprintf(name, sizeof name, "layer%lld.%s", (long long)L, k_kinds[k]);
            const float *base = dump.buf[k] + (size_t)L * n_tokens * (size_t)dump.row_len[k];
            int64_t D = info.n_embd;
            if (dump.row_len[k] == D) bad |= out_add(&out, name, "F32", base, 2, n_tokens, (uint64_t)D, 0);
            else bad |= out_add(&out, name, "F32", base, 3, n_tokens, (uint64_t)(dump.row_len[k] / D), (uint64_t)D);
        }
    }
    if (bad) {
        fprintf(stderr, "ds4: out of memory\n");
        goto out_free;
    }
    char meta[256];
    snprintf(meta, sizeof meta, "{\"producer\":\"ds4 %s\",\"n_prompt\":\"%u\",\"n_decode\":\"%u\"}", ds4_version(),
             n_tokens, n_decode);
    if (write_safetensors(out_path, &out, meta)) goto out_free;
    fprintf(stderr, "ds4: wrote %s (%u prompt + %u decode positions, vocab %zu)\n", out_path, n_tokens, n_decode, V);
    rc = 0;
    goto out_free;
out_fail:
    fprintf(stderr, "ds4: %s\n", err.msg);
out_free:
    for (int k = 0; k < 4; k++) free(dump.buf[k]);
    free(out.t);
    free(prefill);
    free(decode);
    free(decode_tok);
    free(hc);
    free(mtp);
    ds4_session_free(s);
    ds4_engine_close(eng);
    free(tokens);
    return rc;
}
