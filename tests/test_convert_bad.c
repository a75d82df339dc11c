/* tests/test_convert_bad.c — ds4-convert refusing bad checkpoints (missing tensor, wrong shape,
 * wrong dtype, truncated shard, bad index.json, config.json that disagrees) with an error naming
 * the tensor; the command line (flags, exit codes, --info, --dry-run, --tokenizer). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/gguf.h"
#include "format/safetensors.h"
#include "model/convert.h"
#include "testutil.h"

/* How a copied tensor is altered. */
typedef struct mutation {
    const char *name;      /* tensor to alter */
    int drop;              /* leave it out */
    const char *dtype;     /* new dtype string (same byte size), or NULL */
    int64_t shape0;        /* new first dim (> 0) with the bytes cut to fit, or 0 */
    int poke;              /* overwrite the I64 element poke_index with poke_value */
    uint64_t poke_index;
    int64_t poke_value;
} mutation;

/* Copies tiny-v4 (config + model.safetensors) into a fresh dir, applying `m`. */
static char *tiny_copy(const mutation *m) {
    char *src = tu_shared_path("testdata/tiny-v4/model.safetensors");
    st_file *st;
    ds4_error err;
    cr_assert_eq(st_open(&st, src, &err), DS4_OK, "%s", err.msg);
    json_t *hdr = json_object();
    uint64_t off = 0;
    size_t cap = 0;
    for (size_t i = 0; i < st_count(st); i++) cap += st_get(st, i)->n_bytes;
    uint8_t *data = malloc(cap);
    for (size_t i = 0; i < st_count(st); i++) {
        const st_tensor *t = st_get(st, i);
        int hit = m && !strcmp(m->name, t->name);
        if (hit && m->drop) continue;
        json_t *shape = json_array();
        uint64_t bytes = t->n_bytes;
        for (int d = 0; d < t->n_dims; d++) {
            uint64_t v = t->shape[d];
            if (hit && m->shape0 && d == 0) {
                bytes = bytes / v * (uint64_t)m->shape0;
                v = (uint64_t)m->shape0;
            }
            json_array_append_new(shape, json_integer((json_int_t)v));
        }
        memcpy(data + off, t->data, bytes);
        if (hit && m->poke) memcpy(data + off + 8 * m->poke_index, &m->poke_value, 8);
        json_object_set_new(hdr, t->name,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype",
                                      hit && m->dtype ? m->dtype : st_dtype_name(t->dtype), "shape",
                                      shape, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + bytes)));
        off += bytes;
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    size_t hl = strlen(text);
    uint8_t *file = malloc(8 + hl + off);
    for (int i = 0; i < 8; i++) file[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(file + 8, text, hl);
    memcpy(file + 8 + hl, data, off);
    char *dir = tu_tmpdir();
    char *p = tu_join(dir, "model.safetensors");
    tu_write_file(p, file, 8 + hl + off);
    size_t cl;
    char *cfg = tu_read_shared("testdata/tiny-v4/config.json", &cl);
    char *cp = tu_join(dir, "config.json");
    tu_write_file(cp, cfg, cl);
    free(cfg), free(cp), free(p), free(file), free(text), free(data), free(src);
    json_decref(hdr);
    st_close(st);
    return dir;
}

/* Opens dir, builds the F32 plan and checks it against the shards, asserting each step passes;
 * the caller closes hf and frees plan. */
static void open_checked(const char *dir, cv_hf **hf, cv_shape *s, cv_policy *pol, cv_plan *plan) {
    ds4_error err;
    cr_assert_eq(cv_hf_open(hf, dir, s, &err), DS4_OK, "%s", err.msg);
    cv_policy_init(pol, CV_PRESET_F32);
    cr_assert_eq(cv_plan_build(plan, s, pol, true, &err), DS4_OK);
    cr_assert_eq(cv_hf_check_plan(*hf, plan, &err), DS4_OK, "%s", err.msg);
}

/* Runs open + plan + check on dir; expects failure with `needle` in the message. */
static void expect_refused(const char *dir, const char *needle) {
    cv_hf *hf;
    cv_shape s;
    ds4_error err;
    ds4_status st = cv_hf_open(&hf, dir, &s, &err);
    if (st == DS4_OK) {
        cv_policy pol;
        cv_policy_init(&pol, CV_PRESET_F32);
        cv_plan plan;
        cr_assert_eq(cv_plan_build(&plan, &s, &pol, cv_hf_has_mtp(hf), &err), DS4_OK, "%s", err.msg);
        st = cv_hf_check_plan(hf, &plan, &err);
        cv_plan_free(&plan);
        cv_hf_close(hf);
    }
    cr_assert_neq(st, DS4_OK, "expected a failure naming '%s'", needle);
    cr_assert(strstr(err.msg, needle), "message '%s' does not name '%s'", err.msg, needle);
}

/* A tiny copy with mutation m applied must be refused with `needle` in the message. */
static void expect_mutation_refused(const mutation *m, const char *needle) {
    char *dir = tiny_copy(m);
    expect_refused(dir, needle);
    free(dir);
}

Test(convert_bad, unmodified_copy_is_accepted) {
    char *dir = tiny_copy(NULL);
    cv_hf *hf;
    cv_shape s;
    cv_policy pol;
    cv_plan plan;
    open_checked(dir, &hf, &s, &pol, &plan);
    cv_plan_free(&plan);
    cv_hf_close(hf);
    free(dir);
}

Test(convert_bad, missing_tensor_is_named) {
    mutation m = {.name = "layers.2.attn.wkv.scale", .drop = 1};
    expect_mutation_refused(&m, "'layers.2.attn.wkv.scale'");
    mutation m2 = {.name = "layers.4.ffn.experts.15.w2.weight", .drop = 1};
    expect_mutation_refused(&m2, "'layers.4.ffn.experts.15.w2.weight'");
}

Test(convert_bad, wrong_shape_is_named) {
    mutation m = {.name = "layers.1.attn.wq_b.weight", .shape0 = 512};
    expect_mutation_refused(&m, "'layers.1.attn.wq_b.weight'");
    mutation m2 = {.name = "layers.0.ffn.gate.tid2eid", .shape0 = 1000};
    expect_mutation_refused(&m2, "'layers.0.ffn.gate.tid2eid'");
}

Test(convert_bad, wrong_dtype_is_named) {
    mutation m = {.name = "layers.3.ffn.experts.7.w1.weight", .dtype = "U8"};
    expect_mutation_refused(&m, "'layers.3.ffn.experts.7.w1.weight'");
    mutation m2 = {.name = "layers.2.attn.wq_a.scale", .dtype = "U8"};
    expect_mutation_refused(&m2, "'layers.2.attn.wq_a.scale'");
    mutation m3 = {.name = "norm.weight", .dtype = "I16"}; /* not a dtype the reader knows */
    expect_mutation_refused(&m3, "I16");
}

Test(convert_bad, tid2eid_entry_outside_the_experts_is_named) {
    /* Expert ids index the layer's 16 experts (GGUF_LAYOUT §3.5); 16 must be refused when the
     * table is converted, naming the tensor and the entry. */
    mutation m = {.name = "layers.1.ffn.gate.tid2eid", .poke = 1, .poke_index = 100, .poke_value = 16};
    char *dir = tiny_copy(&m);
    cv_hf *hf;
    cv_shape s;
    cv_policy pol;
    cv_plan plan;
    open_checked(dir, &hf, &s, &pol, &plan);
    ds4_error err;
    cv_source src;
    cv_hf_source(hf, &src);
    char *out = tu_join(dir, "x.gguf");
    cv_options o = {.n_threads = 1};
    cr_assert_neq(cv_convert(out, &s, &plan, &pol, &src, &o, &err), DS4_OK);
    cr_assert(strstr(err.msg, "'layers.1.ffn.gate.tid2eid'") && strstr(err.msg, "entry 100"), "%s",
              err.msg);
    FILE *f = fopen(out, "rb");
    cr_assert_null(f, "a failed conversion must not leave %s behind", out);
    cv_plan_free(&plan);
    cv_hf_close(hf);
    free(out), free(dir);
}

Test(convert_bad, truncated_shard_names_the_cut_tensor) {
    char *dir = tiny_copy(NULL);
    char *p = tu_join(dir, "model.safetensors");
    size_t len;
    uint8_t *b = tu_read_file(p, &len);
    tu_write_file(p, b, len - 100);
    /* The last tensor in file order is the one that no longer fits. */
    char last[256] = "";
    {
        st_file *st;
        ds4_error err;
        char *orig = tu_shared_path("testdata/tiny-v4/model.safetensors");
        cr_assert_eq(st_open(&st, orig, &err), DS4_OK);
        snprintf(last, sizeof last, "'%s'", st_get(st, st_count(st) - 1)->name);
        st_close(st);
        free(orig);
    }
    expect_refused(dir, last);
    expect_refused(dir, "truncated");
    free(b), free(p), free(dir);
}

Test(convert_bad, bad_index_json) {
    char *dir = tiny_copy(NULL);
    char *idx = tu_join(dir, "model.safetensors.index.json");
    const char *text = "{\"weight_map\":{\"embed.weight\":\"model.safetensors\","
                       "\"layers.9.ghost\":\"model.safetensors\"}}";
    tu_write_file(idx, text, strlen(text));
    expect_refused(dir, "but not in the index"); /* shard tensors the index lacks */
    const char *text2 = "{\"weight_map\": [1]}";
    tu_write_file(idx, text2, strlen(text2));
    expect_refused(dir, "weight_map");
    free(idx), free(dir);
}

Test(convert_bad, config_disagreeing_with_tensors) {
    char *dir = tiny_copy(NULL);
    char *cp = tu_join(dir, "config.json");
    json_error_t je;
    json_t *c = json_load_file(cp, 0, &je);
    json_object_set_new(c, "q_lora_rank", json_integer(256));
    json_dump_file(c, cp, 0);
    expect_refused(dir, "'layers.0.attn.wq_a.weight'");
    json_object_set_new(c, "q_lora_rank", json_integer(128));
    json_object_del(c, "hidden_size");
    json_dump_file(c, cp, 0);
    expect_refused(dir, "hidden_size");
    json_decref(c);
    free(cp), free(dir);
}

/* ---- command line ------------------------------------------------------------------------------ */

static int run(const char *args, char **out) {
    char *bin = tu_bin_path("ds4-convert");
    size_t n = strlen(bin) + strlen(args) + 2;
    char *cmd = malloc(n);
    snprintf(cmd, n, "%s %s", bin, args);
    free(bin);
    int rc = tu_run(cmd, out);
    free(cmd);
    return rc;
}

Test(convert_cli, usage_errors_exit_2) {
    static const struct { const char *args, *needle; } cases[] = {
        {"--bogus", "unknown option '--bogus'"},
        {"--hf", "needs a value"},
        {"--hf /nonexistent", "--out"},
        {"--synthetic tiny --out x.gguf --preset q7", "q7"},
        {"--synthetic tiny --out x.gguf --type dense", "FAMILY=TYPE"},
        {"--synthetic tiny --out x.gguf --threads 0", "--threads"},
        {"--synthetic tiny --hf d --out x.gguf", "exactly one"},
        {"--hf d --out x.gguf --layers 3", "--synthetic only"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out;
        int rc = run(cases[i].args, &out);
        cr_assert_eq(rc, 2, "'%s': exit %d, want 2; output: %s", cases[i].args, rc, out);
        cr_assert(strstr(out, cases[i].needle), "'%s': output lacks '%s': %s", cases[i].args,
                  cases[i].needle, out);
        free(out);
    }
    char *out;
    cr_assert_eq(run("--help", &out), 0);
    cr_assert(strstr(out, "--synthetic") && strstr(out, "IQ2_XXS"), "%s", out);
    free(out);
    cr_assert_eq(run("--hf /nonexistent/dir --out /nonexistent/x.gguf", &out), 1, "%s", out);
    cr_assert(strstr(out, "/nonexistent/dir"), "%s", out);
    free(out);
}

Test(convert_cli, dry_run_prints_flash_sizes) {
    char *out;
    cr_assert_eq(run("--synthetic flash --preset q2 --dry-run", &out), 0);
    cr_assert(strstr(out, "tensors: 1328"), "%s", out);
    cr_assert(strstr(out, "data region: 86714777664 bytes (80.76 GiB)"), "%s", out);
    free(out);
    cr_assert_eq(run("--synthetic flash --preset q4 --dry-run", &out), 0);
    cr_assert(strstr(out, "data region: 164628168768 bytes (153.32 GiB)"), "%s", out);
    free(out);
}

Test(convert_cli, synthetic_from_config_json_has_the_checkpoint_table) {
    /* --synthetic CONFIG.json --mtp plans exactly the table of the real checkpoint it describes. */
    char *hf = tu_shared_path("testdata/tiny-v4");
    char *cfg = tu_shared_path("testdata/tiny-v4/config.json");
    char args[2048], *a, *b;
    snprintf(args, sizeof args, "--synthetic %s --mtp --preset q2 --dry-run", cfg);
    cr_assert_eq(run(args, &a), 0, "%s", a);
    snprintf(args, sizeof args, "--hf %s --preset q2 --dry-run", hf);
    cr_assert_eq(run(args, &b), 0, "%s", b);
    cr_assert(strstr(a, "tensors: 182"), "%s", a);
    /* Same table lines (everything after the notes). */
    cr_assert_str_eq(strstr(a, "tensor "), strstr(b, "tensor "));
    free(a), free(b);
    /* Without the MTP block: the 32 mtp.0 tensors go, nothing else changes. */
    snprintf(args, sizeof args, "--hf %s --preset q2 --dry-run --no-mtp", hf);
    cr_assert_eq(run(args, &b), 0, "%s", b);
    cr_assert(strstr(b, "tensors: 150") && !strstr(b, "\nmtp.0."), "%s", b);
    free(b), free(hf), free(cfg);
}

Test(convert_cli, convert_with_tokenizer_then_info, .timeout = 120) {
    char *dir = tu_tmpdir();
    char *gg = tu_join(dir, "t.gguf");
    char *hf = tu_shared_path("testdata/tiny-v4");
    char *tokp = tu_shared_path("testdata/tokenizer/deepseek_v4_tokenizer_reconstructed.json");
    char args[4096], *out;
    snprintf(args, sizeof args, "--hf %s --out %s --preset bf16 --tokenizer %s --threads 2", hf, gg, tokp);
    int rc = run(args, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "tokenizer has 129280 tokens"), "vocab note missing: %s", out);
    free(out);
    gguf_ctx *g;
    ds4_error err;
    cr_assert_eq(gguf_open(&g, gg, &err), DS4_OK, "%s", err.msg);
    json_error_t je;
    json_t *tj = json_load_file(tokp, 0, &je);
    cr_assert(tj, "%s", je.text);
    const gguf_value *toks, *merges;
    cr_assert_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(gguf_get_arr(g, "tokenizer.ggml.merges", &merges, &err), DS4_OK);
    json_t *model = json_object_get(tj, "model");
    cr_assert_eq(merges->n_elems, json_array_size(json_object_get(model, "merges")));
    /* Every vocabulary string sits at its id; added tokens at theirs (TOKENIZER.md §6). */
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(model, "vocab"), k, v) {
        gguf_str s;
        cr_assert_eq(gguf_arr_str(toks, (uint64_t)json_integer_value(v), &s, &err), DS4_OK);
        cr_assert(gguf_str_eq(s, k), "token %lld is not '%s'", (long long)json_integer_value(v), k);
    }
    size_t i;
    json_array_foreach(json_object_get(tj, "added_tokens"), i, v) {
        gguf_str s;
        cr_assert_eq(gguf_arr_str(toks, (uint64_t)json_integer_value(json_object_get(v, "id")), &s, &err), DS4_OK);
        cr_assert(gguf_str_eq(s, json_string_value(json_object_get(v, "content"))));
    }
    gguf_str pre;
    cr_assert_eq(gguf_get_str(g, "tokenizer.ggml.pre", &pre, &err), DS4_OK);
    cr_assert(gguf_str_eq(pre, "joyai-llm"));
    gguf_close(g);
    json_decref(tj);
    snprintf(args, sizeof args, "--info %s", gg);
    cr_assert_eq(run(args, &out), 0, "%s", out);
    cr_assert(strstr(out, "deepseek4.block_count") && strstr(out, "blk.4.ffn_down_exps.weight") &&
                  strstr(out, "BF16") && strstr(out, "STRING[129280]"),
              "%s", out);
    free(out), free(gg), free(dir), free(hf), free(tokp);
}
