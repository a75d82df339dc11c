/*
 * text/tokenizer.h — internal API of the V4 tokenizer (TOKENIZER.md; GGUF_LAYOUT §7).
 *
 * Two layers:
 *  1. tok_arrays: the tokenizer exactly as a GGUF stores it (token strings, token types,
 *     merges, special ids). tok_arrays_from_json() turns a Hugging Face tokenizer.json into
 *     these arrays; the converter writes them to GGUF with the key names below, and the GGUF
 *     loader reads them back into the same struct, so writing and loading share one layout.
 *  2. ds4_tokenizer (opaque, public in ds4.h) is built from a tok_arrays by tok_from_arrays().
 *
 * Layout of tok_arrays (TOKENIZER.md §2, §6):
 *  - tokens[id], id = 0 .. n_tokens-1: ordinary vocabulary tokens in the byte-level alphabet
 *    of TOKENIZER.md §3.4 ("Ġthe"), added tokens as their literal UTF-8 content ("<｜User｜>").
 *    Ids that neither the vocabulary nor the added tokens define (none in V4) are filled with
 *    "[PAD<id>]" and typed TOK_TYPE_UNUSED, as llama.cpp's converter does.
 *  - token_types[id]: TOK_TYPE_NORMAL for vocabulary tokens; for added tokens CONTROL when the
 *    HF `special` flag is set or the content looks like `<|…|>` / `<｜…｜>`, else USER_DEFINED
 *    (llama.cpp's convention, which the published ds4 GGUFs presumably follow; TOKENIZER.md §6
 *    says this is not verified against a V4 GGUF, so loading does not rely on it).
 *  - merges[rank]: "LEFT RIGHT" with exactly one ASCII space; rank = index.
 *  - special_ids: every added token whose HF `special` flag is true (decode-with-skip drops
 *    these, TOKENIZER.md §3.6). normalized_ids: added tokens whose HF `normalized` flag is
 *    true (matched in the second added-token pass, §3.2). llama.cpp's token_type cannot carry
 *    either flag (CONTROL also covers non-special chat markers such as <｜User｜>), so ds4
 *    stores them in the two TOK_GGUF_KEY_*_IDS arrays; a GGUF without them (the published
 *    files) falls back to "special = CONTROL" and "nothing normalized" (see tok_from_arrays).
 *
 * Thread safety: a built ds4_tokenizer is read-only except for its word cache, which is
 * sharded and locked internally; any number of threads may encode/decode concurrently.
 */
#ifndef DS4_TEXT_TOKENIZER_H
#define DS4_TEXT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "ds4.h"

/* GGUF metadata keys (GGUF_LAYOUT §7.1, §2.3). The two ds4 keys are ARRAY of INT32, ascending. */
#define TOK_GGUF_KEY_MODEL            "tokenizer.ggml.model"      /* STRING "gpt2" */
#define TOK_GGUF_KEY_PRE              "tokenizer.ggml.pre"        /* STRING "joyai-llm" */
#define TOK_GGUF_KEY_TOKENS           "tokenizer.ggml.tokens"     /* ARRAY STRING [n_tokens] */
#define TOK_GGUF_KEY_TOKEN_TYPE       "tokenizer.ggml.token_type" /* ARRAY INT32 [n_tokens] */
#define TOK_GGUF_KEY_MERGES           "tokenizer.ggml.merges"     /* ARRAY STRING [n_merges] */
#define TOK_GGUF_KEY_BOS_ID           "tokenizer.ggml.bos_token_id" /* UINT32 */
#define TOK_GGUF_KEY_EOS_ID           "tokenizer.ggml.eos_token_id" /* UINT32 */
#define TOK_GGUF_KEY_ADD_BOS          "tokenizer.ggml.add_bos_token" /* BOOL false */
#define TOK_GGUF_KEY_ADD_EOS          "tokenizer.ggml.add_eos_token" /* BOOL false */
#define TOK_GGUF_KEY_SPECIAL_IDS      "tokenizer.ds4.special_token_ids"
#define TOK_GGUF_KEY_NORMALIZED_IDS   "tokenizer.ds4.normalized_token_ids"
#define TOK_GGUF_MODEL_VALUE          "gpt2"
#define TOK_GGUF_PRE_VALUE            "joyai-llm"

/* llama.cpp token types (gguf-py TokenType). */
enum {
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6
};

/* Sanity bounds on what a tokenizer file may declare (clear errors, never huge allocations). */
#define TOK_MAX_TOKENS     (1u << 22)   /* 4 Mi ids; V4 has 129 280 */
#define TOK_MAX_TOKEN_BYTES 4096u       /* longest token string accepted */

typedef struct tok_arrays {
    uint32_t n_tokens;
    char **tokens;            /* [n_tokens], each malloc'd and NUL-terminated */
    int32_t *token_types;     /* [n_tokens], TOK_TYPE_*; NULL when a GGUF lacks the key */
    uint32_t n_merges;
    char **merges;            /* [n_merges], "LEFT RIGHT" */
    int32_t bos_id, eos_id;   /* -1 if unknown */
    uint32_t n_special;
    int32_t *special_ids;     /* ascending; NULL with has_special_ids false when unknown */
    uint32_t n_normalized;
    int32_t *normalized_ids;  /* ascending */
    int has_special_ids;      /* the special/normalized lists are authoritative (JSON, ds4 GGUF) */
} tok_arrays;

/* Parses a Hugging Face tokenizer.json held in memory (json_bytes bytes, need not be
 * NUL-terminated). Checks that the model, normalizer, pre-tokenizer and decoder are the
 * DeepSeek V3/V4 ones this engine implements (TOKENIZER.md §2) and refuses anything else with
 * DS4_ERR_UNSUPPORTED naming the field. On success *out owns everything (tok_arrays_free). */
ds4_status tok_arrays_from_json(tok_arrays *out, const char *json, size_t json_bytes,
                                ds4_error *err);
/* The same from a file path (errors are prefixed with the path). */
ds4_status tok_arrays_from_json_file(tok_arrays *out, const char *path, ds4_error *err);
/* Frees what a tok_arrays owns and zeroes it; NULL-safe, safe on a zeroed struct. */
void tok_arrays_free(tok_arrays *a);

/* Reads the tokenizer.ggml.* metadata of an open GGUF into arrays (tokenizer_gguf.c).
 * Requires tokens and merges; token_type, the two ds4 id lists and bos/eos ids are optional;
 * tokenizer.ggml.model / .pre, when present, must be gpt2 / joyai-llm (or deepseek-v3). */
typedef struct gguf_ctx gguf_ctx;
ds4_status tok_arrays_from_gguf(tok_arrays *out, const gguf_ctx *g, ds4_error *err);
/* The same from a path (opens and closes the GGUF; errors are prefixed with the path). */
ds4_status tok_arrays_from_gguf_file(tok_arrays *out, const char *path, ds4_error *err);

/* Builds a tokenizer from arrays (copies what it needs; `a` may be freed afterwards).
 * Which ids are added tokens: token_types CONTROL/USER_DEFINED, plus any token that is neither
 * a byte symbol nor a merge result and not UNUSED (so a GGUF without token_type still works).
 * Special/normalized flags: from special_ids/normalized_ids when has_special_ids, else
 * special = CONTROL type and no token normalized (equivalent for V4's table, §3.2). */
ds4_status tok_from_arrays(ds4_tokenizer **out, const tok_arrays *a, ds4_error *err);

/* ds4_tokenize with flags 0, except that an added token is recognised only where it lies
 * wholly outside the literal spans [lit[2k], lit[2k+1]) (sorted, disjoint, non-empty offsets
 * into text): their bytes are always plain BPE text, never a control token. Plain text between
 * recognised added tokens is pre-tokenized as one span even across span boundaries, exactly as
 * the whole-string path does, so the ids equal ds4_tokenize(flags 0) whenever no added-token
 * text overlaps a literal span. Used by ds4_chat_render_tokens (tokenizer_encode.c). */
ds4_status tok_encode_literal(const ds4_tokenizer *tok, const char *text, size_t text_bytes,
                              const size_t *lit, size_t n_lit, int32_t **out_ids,
                              size_t *out_n_tokens, ds4_error *err);

#endif
