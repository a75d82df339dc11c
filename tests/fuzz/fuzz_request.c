/*
 * tests/fuzz/fuzz_request.c — libFuzzer target for the server's request parsers and
 * formatters: byte 0 picks the API (chat, completions, Anthropic, Responses), the rest is the
 * body. A parsed request is then pushed through the text stream and formatter with the body
 * bytes as "generated text", so parser output and SSE framing are exercised together.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/fmt.h"
#include "serve/request.h"
#include "serve/textstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    srv_api api = (srv_api)(data[0] % 4);
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    srv_limits lim = {.max_depth = 64, .n_ctx = 4096, .default_max_tokens = 100};
    srv_request r;
    srv_reqerr e;
    if (srv_request_parse(api, body, len, &lim, &r, &e) != DS4_OK) {
        char *b = srv_fmt_error_body(api, &e);
        free(b);
        return 0;
    }
    srv_fmt f;
    if (srv_fmt_init(&f, &r, "ID", 1)) {
        srv_textstream ts;
        srv_ts_init(&ts, &f, &r);
        srv_fmt_begin(&f, NULL);
        for (size_t i = 0; i < len; i += 7) srv_ts_push(&ts, body + i, len - i < 7 ? len - i : 7);
        srv_ts_flush(&ts);
        if (r.n_tools) {
            srv_fmt_tool_begin(&f, "call_0", r.tools[0]);
            srv_fmt_tool_args(&f, body, len);
            srv_fmt_tool_end(&f);
        }
        srv_fmt_finish(&f, (srv_finish)(data[0] / 4 % 4), NULL, NULL);
        srv_ts_free(&ts);
    }
    srv_fmt_free(&f);
    srv_request_free(&r);
    return 0;
}
