/*
 * model/convert.h — the ds4 converter: a V4 model shape (from config.json or a named preset),
 * the GGUF tensor plan for it (names, dims, types: GGUF_LAYOUT §2-§3), the type policy
 * (presets, family overrides, block-size fallbacks: §5.3), and the streaming conversion driver
 * that fills every planned tensor from a source (the official checkpoint, or random weights)
 * and writes the GGUF (§5.4).
 *
 * Owns: DeepSeek V4 naming, shape checks, metadata values, type choice, conversion order.
 * Must not: print (notes go through cv_options.log), parse GGUF/safetensors bytes itself
 * (format/ does that), or hold more than one tensor slab per worker in memory.
 *
 * Files: convert_shape.c (shape + metadata), convert_plan.c (tensor table + type policy),
 * convert_source.c (checkpoint decoding), convert.c (driver), convert_tokenizer.c,
 * convert_imatrix.c; synthetic.c provides the random source.
 */
#ifndef DS4_MODEL_CONVERT_H
#define DS4_MODEL_CONVERT_H

#include <stdbool.h>
#include <stdint.h>
#include "ds4.h"
#include "format/gguf_write.h"

#define CV_MAX_LAYERS 256
#define CV_NAME_MAX 96

/* ---- Model shape (MODEL_MATH §0, GGUF_LAYOUT §2.1) ------------------------------------------ */

typedef struct cv_shape {
    char name[64];            /* general.name */
    uint32_t n_layers, dim, vocab;
    uint32_t n_heads, n_kv_heads, head_dim, rope_dim;
    uint32_t q_lora, o_groups, o_lora;
    uint32_t n_experts, n_used, moe_inter, n_shared, n_hash;
    uint32_t window, idx_heads, idx_head_dim, idx_topk;
    uint32_t hc_mult, sinkhorn_iters;
    uint32_t n_mtp;           /* MTP blocks described by the config (num_nextn_predict_layers) */
    uint32_t ratios[CV_MAX_LAYERS + 1]; /* compress ratio per layer; entry n_layers = MTP block */
    uint32_t n_ratios;        /* entries given (n_layers + n_mtp) */
    uint64_t context_length, orig_ctx;
    double rope_theta, compress_rope_theta, rope_factor, beta_fast, beta_slow;
    double route_scale, norm_eps, hc_eps, swiglu_limit;
    bool norm_topk;
} cv_shape;

/* Named shapes: "tiny" (testdata/tiny-v4), "flash" (DeepSeek V4 Flash), "pro" (V4 Pro: dim,
 * layers, experts, heads and ranks from the reference ModelArgs; compress ratios follow the
 * Flash rule, an assumption). DS4_ERR_NOT_FOUND for another name. */
ds4_status cv_shape_preset(cv_shape *s, const char *name, ds4_error *err);

/* Reads a Hugging Face V4 config.json (the keys of testdata/tiny-v4/config.json). Every value
 * is range-checked; errors name the key. */
ds4_status cv_shape_from_config(cv_shape *s, const char *path, ds4_error *err);
ds4_status cv_shape_from_json_text(cv_shape *s, const char *text, uint64_t len, ds4_error *err);

/* Shrinks a shape for tests/benchmarks: n_layers (keeps the ratio pattern) and/or n_experts
 * (0 = keep). Checks n_used <= n_experts etc. */
ds4_status cv_shape_shrink(cv_shape *s, uint32_t n_layers, uint32_t n_experts, ds4_error *err);

/* Consistency of a shape (divisibility, limits); called by the functions above. */
ds4_status cv_shape_check(const cv_shape *s, ds4_error *err);

/* Writes general.* and deepseek4.* metadata (GGUF_LAYOUT §2.1-§2.3). file_type is the
 * general.file_type value (llama.cpp ftype). */
ds4_status cv_write_metadata(gguf_writer *w, const cv_shape *s, uint32_t file_type,
                             ds4_error *err);

/* ---- Tensor plan ------------------------------------------------------------------------------ */

/* Families that pick a type (GGUF_LAYOUT §5.3); --type FAMILY=TYPE names them. */
typedef enum cv_family {
    CV_FAM_EMBED = 0,  /* token_embd */
    CV_FAM_OUTPUT,     /* output.weight */
    CV_FAM_ATTN,       /* attention projections attn_q_a/q_b/kv/output_a/output_b */
    CV_FAM_SHARED,     /* *_shexp */
    CV_FAM_GATE,       /* routed ffn_gate_exps */
    CV_FAM_UP,         /* routed ffn_up_exps */
    CV_FAM_DOWN,       /* routed ffn_down_exps */
    CV_FAM_DENSE,      /* other matrices: hc fns, compressor, indexer, router */
    CV_FAM_MTP,        /* mtp.0.e_proj / h_proj */
    CV_FAM_VECTOR,     /* 1-D: norms, HC base/scale, sinks, router bias (always F32) */
    CV_FAM_TABLE,      /* tid2eid (always I32) */
    CV_FAM_COUNT
} cv_family;

/* How the checkpoint stores a tensor's source. */
typedef enum cv_src_kind {
    CV_SRC_FLOAT = 0,  /* F32/F16/BF16, or F8_E4M3 + .scale (GGUF_LAYOUT §4.7) */
    CV_SRC_EXPERTS,    /* per-expert FP4 (I8 + .scale) matrices stacked on ne2 */
    CV_SRC_TID2EID     /* I64 [vocab, n_used] -> I32 */
} cv_src_kind;

typedef struct cv_tensor {
    char name[CV_NAME_MAX];   /* GGUF name */
    char hf[CV_NAME_MAX];     /* HF name; for experts a printf pattern with one %u (expert id) */
    cv_family fam;
    cv_src_kind src;
    int layer;                /* -1 global, n_layers for the MTP block */
    uint32_t n_dims;
    uint64_t ne[3];           /* GGUF dims, ne[0] = input features */
    uint32_t type;            /* chosen ds4_type */
    uint32_t wanted;          /* type before the block-size fallback */
    uint64_t n_bytes;
    bool src_f32;             /* the official checkpoint stores it in F32 (GGUF_LAYOUT §3.2-§3.3
                                 HF dtype column: hc_*_fn, compressor ape) */
} cv_tensor;

/* Presets (issue #2 §3). */
typedef enum cv_preset {
    CV_PRESET_F32 = 0, CV_PRESET_F16, CV_PRESET_BF16, CV_PRESET_Q8_0, CV_PRESET_Q2, CV_PRESET_Q4,
    CV_PRESET_COUNT
} cv_preset;

typedef struct cv_policy {
    uint32_t fam_type[CV_FAM_COUNT]; /* ds4_type per family */
    uint32_t file_type;              /* general.file_type */
    /* Test presets (f32/f16/bf16/q8_0): a matrix the checkpoint stores in F32 stays F32 unless
     * its family was set with --type, so those files are lossless where the checkpoint is
     * (bf16) and keep the reference's f32 HC/compressor inputs. q2/q4 follow the published
     * tables (F16 there). */
    bool keep_f32_src;
    bool fam_set[CV_FAM_COUNT];      /* family given explicitly by cv_policy_override */
} cv_policy;

ds4_status cv_preset_from_name(const char *name, cv_preset *out, ds4_error *err);
const char *cv_preset_name(cv_preset p);
void cv_policy_init(cv_policy *pol, cv_preset p);
/* Applies "FAMILY=TYPE" (families: experts, gate, up, down, attention, shared, output,
 * embedding, dense, mtp). DS4_ERR_INVALID_ARG naming the bad part. */
ds4_status cv_policy_override(cv_policy *pol, const char *spec, ds4_error *err);
const char *cv_family_name(cv_family f);
/* One line per preset/family for --help; static text. */
const char *cv_policy_help(void);

typedef struct cv_plan {
    cv_tensor *t;
    uint64_t n;
    uint64_t data_bytes;      /* tensor payload incl. alignment padding (32) */
    bool has_mtp;
} cv_plan;

/* Builds the tensor table for `s` under `pol`; with_mtp adds the mtp.0.* block (§3.8).
 * Rows that do not fit the wanted block size fall back (K-quants/IQ2 -> Q8_0 -> F16). */
ds4_status cv_plan_build(cv_plan *plan, const cv_shape *s, const cv_policy *pol, bool with_mtp,
                         ds4_error *err);
void cv_plan_free(cv_plan *plan);
const cv_tensor *cv_plan_find(const cv_plan *plan, const char *name);

/* ---- Sources -------------------------------------------------------------------------------- */

/* A source fills f32 rows of a planned tensor. Rows are numbered within one expert (e = 0 for
 * non-expert tensors): row r of expert e holds ne[0] values. Must be safe to call from several
 * threads at once for different slabs. */
typedef struct cv_source {
    void *ctx;
    ds4_status (*read_rows)(void *ctx, const cv_tensor *t, uint32_t expert, uint64_t row0,
                            uint64_t n_rows, float *dst, ds4_error *err);
    /* tid2eid: ne[0] * ne[1] int32 values in GGUF order. */
    ds4_status (*read_table)(void *ctx, const cv_tensor *t, int32_t *dst, ds4_error *err);
    /* Bytes of source data consumed so far (throughput); may be NULL. */
    uint64_t (*bytes_read)(void *ctx);
} cv_source;

/* The official checkpoint (convert_source.c): opens DIR with the safetensors reader, reads
 * config.json from it, and checks every planned tensor (presence, dtype, shape, scale shape)
 * before anything is written. */
typedef struct cv_hf cv_hf;
ds4_status cv_hf_open(cv_hf **out, const char *dir, cv_shape *shape, ds4_error *err);
/* True when the checkpoint holds an mtp.0 block. */
bool cv_hf_has_mtp(const cv_hf *hf);
ds4_status cv_hf_check_plan(cv_hf *hf, const cv_plan *plan, ds4_error *err);
/* Number of checkpoint tensors the plan did not use (and the first one's name). */
uint64_t cv_hf_unused(const cv_hf *hf, const cv_plan *plan, const char **first);
void cv_hf_source(cv_hf *hf, cv_source *src);
void cv_hf_close(cv_hf *hf);

/* ---- Driver ----------------------------------------------------------------------------------- */

typedef struct cv_progress {
    uint64_t tensors_done, n_tensors;
    uint64_t bytes_written, bytes_total; /* output tensor data */
    uint64_t input_bytes;
    const char *current;                 /* name of the tensor being written */
} cv_progress;

struct cv_imatrix;

typedef struct cv_options {
    int n_threads;                        /* <= 0: one per core */
    const struct cv_imatrix *imatrix;     /* NULL: none */
    const char *tokenizer_json;           /* NULL: no tokenizer metadata */
    /* Notes and warnings (fallbacks, unused tensors); may be NULL. */
    void (*log)(void *ud, const char *msg);
    void (*progress)(void *ud, const cv_progress *p);
    void *ud;
} cv_options;

/* Writes `plan` to out_path: metadata of `s` (+ tokenizer, + imatrix provenance), directory,
 * then every tensor streamed from `src`, quantized on opts->n_threads threads. */
ds4_status cv_convert(const char *out_path, const cv_shape *s, const cv_plan *plan,
                      const cv_policy *pol, cv_source *src, const cv_options *opts,
                      ds4_error *err);

/* Total file size the conversion would produce (header + directory + data) without reading
 * any source; tokenizer metadata counted when opts->tokenizer_json is set. */
ds4_status cv_plan_file_bytes(const cv_shape *s, const cv_plan *plan, const cv_policy *pol,
                              const cv_options *opts, uint64_t *out, ds4_error *err);

#endif
