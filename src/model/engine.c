/*
 * model/engine.c — the public engine object: opens a GGUF (format/gguf), binds the model
 * (model/model.h), answers info and memory questions, and computes the model identity that
 * snapshots carry. Owns no session state and runs no forward pass.
 *
 * Model identity (ds4_model_info.model_id) = SHA-256 over
 *   "ds4-model-id-v1" ‖ GGUF bytes [0, data_offset) ‖ for each tensor in directory order: the
 *   first min(64, n_bytes) bytes of its data.
 * The first part covers every metadata key (hyper-parameters, tokenizer) and the whole tensor
 * table (names, types, shapes, offsets), so any difference in architecture, quantization or layout
 * changes the id. The weight samples tell apart files that share a layout but not their values
 * (two random-weight models, a re-quantization with another imatrix) while costing one page read
 * per tensor, not a pass over 80 GB. Two files differing only deep inside a tensor are not told
 * apart; that needs a full hash, which is what the file's checksum is for.
 */
#include "model/engine.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#ifdef DS4_CUDA
#include "cuda/cuda_api.h"
#include "cuda/model_cuda.h"
#endif

void ds4_engine_options_init(ds4_engine_options *opt) {
    if (!opt) return;
    memset(opt, 0, sizeof *opt);
    opt->n_threads = 0;
    opt->backend = "cpu";
    opt->mtp_path = NULL;
    opt->prefault = false;
    opt->exact_activations = false;
    opt->gpu_layers_experts = -1;
    opt->gpu_ctx_tokens = 0;
}

const char *ds4_default_backend(void) {
#ifdef DS4_CUDA
    if (cuda_device_count() > 0) return "cuda";
#endif
    return "cpu";
}

/* gpu_layers_experts checked: a layer count >= 0, or -1 for as many as fit. */
static ds4_status gpu_layers_opt(const ds4_engine_options *opt, int *out, ds4_error *err) {
    *out = opt->gpu_layers_experts;
    if (*out < -1)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "engine_open: gpu_layers_experts %d: give a layer count >= 0, or -1 "
                          "for as many as fit", *out);
    return DS4_OK;
}

void engine_model_id(const gguf_ctx *g, uint8_t out[32]) {
    static const char tag[] = "ds4-model-id-v1";
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int n = 0;
    memset(out, 0, 32);
    if (!md) return;
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, tag, sizeof tag - 1);
    EVP_DigestUpdate(md, gguf_file_base(g), (size_t)gguf_data_offset(g));
    for (uint64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        EVP_DigestUpdate(md, t->data, (size_t)(t->n_bytes < 64 ? t->n_bytes : 64));
    }
    EVP_DigestFinal_ex(md, out, &n);
    EVP_MD_CTX_free(md);
}

/* Reads every page once so decode never waits on the disk (ds4's --warm-weights). */
static void prefault(const gguf_ctx *g) {
    const volatile uint8_t *p = gguf_file_base(g);
    uint64_t n = gguf_file_bytes(g);
    uint8_t acc = 0;
    for (uint64_t off = 0; off < n; off += 4096) acc ^= p[off];
    (void)acc;
}

/* Longest context: deepseek4.context_length when stored, else the YaRN-extended length
 * (original_context_length × factor = 1M for Flash, MODEL_MATH §3.4). */
static uint32_t ctx_max(const gguf_ctx *g, const model_hparams *hp) {
    uint64_t v = 0;
    if (gguf_get_u64(g, "deepseek4.context_length", &v, NULL) == DS4_OK && v > 0)
        return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    double c = (double)hp->yarn_orig_ctx * (hp->yarn_factor > 1.0 ? hp->yarn_factor : 1.0);
    if (!(c >= 1.0)) return 1;
    return c > (double)UINT32_MAX ? UINT32_MAX : (uint32_t)c;
}

ds4_status ds4_engine_open_ex(ds4_engine **out, const char *gguf_path, const ds4_engine_options *opt,
                              int64_t idx_topk_override, ds4_error *err) {
    if (!out || !gguf_path) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "engine_open: NULL argument");
    *out = NULL;
    ds4_engine_options defaults;
    ds4_engine_options_init(&defaults);
    if (!opt) opt = &defaults;
    bool want_cuda = opt->backend && strcmp(opt->backend, "cuda") == 0;
#ifndef DS4_CUDA
    if (want_cuda)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "engine_open: backend 'cuda': this build has no CUDA (build with `make cuda`)");
#endif
    if (want_cuda && opt->exact_activations)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "engine_open: exact activations are a CPU checking mode (use --backend cpu)");
    if (opt->backend && strcmp(opt->backend, "cpu") != 0 && !want_cuda)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED, "engine_open: backend '%s' is not available (use \"cpu\")",
                          opt->backend);
    if (!want_cuda && opt->gpu_layers_experts != -1)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG,
                          "engine_open: gpu_layers_experts places routed experts on a GPU; it "
                          "needs backend \"cuda\"");
    int gpu_layers = -1;
    ds4_status st = want_cuda ? gpu_layers_opt(opt, &gpu_layers, err) : DS4_OK;
    if (st) return st;
    if (opt->mtp_path)
        return ds4_seterr(err, DS4_ERR_UNSUPPORTED,
                          "engine_open: a separate MTP GGUF (%s) is not supported yet; the MTP block is "
                          "used when the main GGUF carries mtp.0.* tensors",
                          opt->mtp_path);
    ds4_engine *e = calloc(1, sizeof *e);
    if (!e) return ds4_seterr(err, DS4_ERR_NOMEM, "engine_open: out of memory");
    st = gguf_open(&e->gguf, gguf_path, err);
    if (st != DS4_OK) goto out_free_engine;
    model_options mo = {.n_threads = opt->n_threads, .idx_topk_override = idx_topk_override,
                        .exact_activations = opt->exact_activations};
    st = model_open(&e->model, e->gguf, &mo, err);
    if (st != DS4_OK) {
        ds4_err_prefix(err, "%s", gguf_path);
        goto out_close_gguf;
    }
#ifdef DS4_CUDA
    /* Backend "cuda" (issue #7): weights and KV state on device 0; the CPU model stays open
     * (embedding rows, MTP block, the host copy of the state for snapshots). */
    if (want_cuda) {
        /* Placement of the routed experts (issue #7): the auto-fit leaves room for the device
         * state of gpu_ctx_tokens (cuda_state_device_bytes). */
        uint32_t n_ctx = opt->gpu_ctx_tokens ? opt->gpu_ctx_tokens : 32768;
        cuda_model_opts co = {.gpu_layers_experts = gpu_layers,
                              .reserve_bytes = cuda_state_device_bytes(e->model, n_ctx)};
        if ((st = cuda_model_open_ex(&e->cuda, e->model, e->gguf, 0, &co, NULL, 0, err))) {
            ds4_err_prefix(err, "%s", gguf_path);
            model_close(e->model);
            goto out_close_gguf;
        }
        e->info.gpu_layers_experts = (uint32_t)cuda_model_gpu_layers_experts(e->cuda);
        e->info.host_expert_bytes = cuda_model_host_expert_bytes(e->cuda);
    }
#else
    (void)gpu_layers;
#endif
    if (opt->prefault) prefault(e->gguf);
    const model_hparams *hp = model_get_hparams(e->model);
    ds4_model_info *in = &e->info;
    in->n_vocab = (uint32_t)hp->n_vocab;
    in->n_ctx_max = ctx_max(e->gguf, hp);
    in->n_layer = (uint32_t)hp->n_layer;
    in->n_embd = (uint32_t)hp->n_embd;
    in->n_head = (uint32_t)hp->n_head;
    in->n_expert = (uint32_t)hp->n_expert;
    in->n_expert_used = (uint32_t)hp->n_expert_used;
    in->has_mtp = model_has_mtp(e->model);
    in->weight_bytes = gguf_file_bytes(e->gguf) - gguf_data_offset(e->gguf);
    engine_model_id(e->gguf, in->model_id);
    pthread_mutex_init(&e->eval_mu, NULL);
    *out = e;
    return DS4_OK;
out_close_gguf:
    gguf_close(e->gguf);
out_free_engine:
    free(e);
    return st;
}

ds4_status ds4_engine_open(ds4_engine **out, const char *gguf_path, const ds4_engine_options *opt,
                           ds4_error *err) {
    return ds4_engine_open_ex(out, gguf_path, opt, 0, err);
}

void ds4_engine_close(ds4_engine *e) {
    if (!e) return;
    pthread_mutex_destroy(&e->eval_mu);
#ifdef DS4_CUDA
    cuda_model_close(e->cuda);
#endif
    model_close(e->model);
    gguf_close(e->gguf);
    free(e);
}

ds4_status ds4_engine_info(const ds4_engine *e, ds4_model_info *out, ds4_error *err) {
    if (!e || !out) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "engine_info: NULL argument");
    *out = e->info;
    return DS4_OK;
}

ds4_status ds4_engine_memory_estimate(const ds4_engine *e, uint32_t n_ctx, ds4_memory_estimate *out,
                                      ds4_error *err) {
    if (!e || !out) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "memory_estimate: NULL argument");
    if (n_ctx == 0 || n_ctx > e->info.n_ctx_max)
        return ds4_seterr(err, DS4_ERR_RANGE, "memory_estimate: context %u outside [1, %u]", n_ctx,
                          e->info.n_ctx_max);
    model_mem_estimate me;
    model_memory_estimate(e->model, n_ctx, &me);
    out->fixed_bytes = me.fixed_bytes;
    out->kv_bytes_per_token = me.kv_bytes_per_token;
    out->total_bytes = me.total_bytes;
    return DS4_OK;
}
