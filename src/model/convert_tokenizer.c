/*
 * model/convert_tokenizer.c — writes the tokenizer.ggml.* metadata from a Hugging Face
 * tokenizer.json the way the published files carry it (GGUF_LAYOUT §7.1, §2.3; TOKENIZER.md §6).
 * Parsing belongs to text/tokenizer (tok_arrays_from_json_file); this file only maps the
 * arrays to GGUF keys.
 */
#include "model/convert_tokenizer.h"
#include "core/error.h"
#include "text/tokenizer.h"

ds4_status cv_tokenizer_write(gguf_writer *w, const char *path, uint32_t *n_tokens,
                              ds4_error *err) {
    tok_arrays a = {0};
    ds4_status st = tok_arrays_from_json_file(&a, path, err);
    if (st) return st;
    if (n_tokens) *n_tokens = a.n_tokens;
#define TRY(call) do { if ((st = (call)) != DS4_OK) goto out_free; } while (0)
    TRY(gguf_writer_add_str(w, TOK_GGUF_KEY_MODEL, TOK_GGUF_MODEL_VALUE, err));
    TRY(gguf_writer_add_str(w, TOK_GGUF_KEY_PRE, TOK_GGUF_PRE_VALUE, err));
    TRY(gguf_writer_add_arr_str(w, TOK_GGUF_KEY_TOKENS, (const char *const *)a.tokens, a.n_tokens, err));
    TRY(gguf_writer_add_arr(w, TOK_GGUF_KEY_TOKEN_TYPE, GGUF_TYPE_INT32, a.token_types, a.n_tokens, err));
    TRY(gguf_writer_add_arr_str(w, TOK_GGUF_KEY_MERGES, (const char *const *)a.merges, a.n_merges, err));
    if (a.bos_id >= 0) TRY(gguf_writer_add_u32(w, TOK_GGUF_KEY_BOS_ID, (uint32_t)a.bos_id, err));
    if (a.eos_id >= 0) {
        TRY(gguf_writer_add_u32(w, TOK_GGUF_KEY_EOS_ID, (uint32_t)a.eos_id, err));
        /* Dumps of ds4-derived files show padding = EOS (§2.3, informative). */
        TRY(gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)a.eos_id, err));
    }
    TRY(gguf_writer_add_bool(w, TOK_GGUF_KEY_ADD_BOS, false, err));
    TRY(gguf_writer_add_bool(w, TOK_GGUF_KEY_ADD_EOS, false, err));
    if (a.has_special_ids) {
        /* ds4's own keys: the HF special/normalized flags token_type cannot carry. */
        TRY(gguf_writer_add_arr(w, TOK_GGUF_KEY_SPECIAL_IDS, GGUF_TYPE_INT32, a.special_ids,
                                a.n_special, err));
        TRY(gguf_writer_add_arr(w, TOK_GGUF_KEY_NORMALIZED_IDS, GGUF_TYPE_INT32, a.normalized_ids,
                                a.n_normalized, err));
    }
#undef TRY
out_free:
    tok_arrays_free(&a);
    if (st) ds4_err_prefix(err, "tokenizer %s", path);
    return st;
}
