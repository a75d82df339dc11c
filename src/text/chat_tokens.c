/*
 * text/chat_tokens.c — rendered conversation to prompt token ids without control-token
 * injection (ds4_chat_render_tokens): template bytes are tokenized as usual, client-supplied
 * bytes (the literal spans chat.c records) as plain text. Owns no rendering rule (chat.c) and
 * no tokenization rule (tokenizer_encode.c).
 */
#include <stdlib.h>

#include "core/error.h"
#include "text/chat.h"
#include "text/tokenizer.h"

ds4_status ds4_chat_render_tokens(const ds4_chat *chat, const ds4_tokenizer *tok, uint32_t flags,
                                  int32_t **out_ids, size_t *out_n_tokens, char **out_text,
                                  size_t *out_text_bytes, ds4_error *err) {
    if (out_ids) *out_ids = NULL;
    if (out_n_tokens) *out_n_tokens = 0;
    if (out_text) *out_text = NULL;
    if (out_text_bytes) *out_text_bytes = 0;
    if (!chat || !tok || !out_ids || !out_n_tokens)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "chat render tokens: NULL argument");
    if (flags & ~DS4_CHAT_TRUST_CONTENT)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "chat render tokens: unknown flags 0x%x",
                          flags);
    chat_buf b = {0};
    ds4_status st = chat_render_buf(chat, &b, err);
    if (st == DS4_OK) st = chat_buf_status(&b, "chat render", err);
    if (st != DS4_OK) goto out_free_buf;
    size_t n_lit = 0;
    size_t *lit = chat_buf_take_lit(&b, &n_lit);
    if (flags & DS4_CHAT_TRUST_CONTENT) n_lit = 0; /* the old whole-string path */
    st = tok_encode_literal(tok, b.p, b.len, lit, n_lit, out_ids, out_n_tokens, err);
    free(lit);
    if (st != DS4_OK) goto out_free_buf;
    if (out_text) {
        size_t n;
        *out_text = chat_buf_take(&b, &n);
        if (!*out_text) {
            free(*out_ids);
            *out_ids = NULL;
            *out_n_tokens = 0;
            st = ds4_seterr(err, DS4_ERR_NOMEM, "chat render tokens: out of memory");
            goto out_free_buf;
        }
        if (out_text_bytes) *out_text_bytes = n;
    } else if (out_text_bytes) {
        *out_text_bytes = b.len;
    }
out_free_buf:
    chat_buf_free(&b);
    return st;
}
