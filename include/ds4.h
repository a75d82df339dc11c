/*
 * ds4.h — the one public header of libds4, an inference engine for DeepSeek V4 Flash.
 *
 * Conventions (STYLE.md §2):
 *  - Opaque handles with paired lifetimes (open/close, create/free); out-param first.
 *  - Every fallible call returns ds4_status and fills a caller-owned ds4_error
 *    (nullable). There is no hidden last-error state: server threads share one engine.
 *  - Every returned pointer says who frees it and how long it lives.
 *  - Sizes carry their unit in the name: _bytes, n_ (elements), n_tokens, pos (0-based).
 */
#ifndef DS4_H
#define DS4_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS4_VERSION_STRING "0.1.0"

/* ---- Errors ------------------------------------------------------------------------------ */

typedef enum ds4_status {
    DS4_OK = 0,
    DS4_ERR_INVALID_ARG,   /* caller passed something out of contract */
    DS4_ERR_IO,            /* open/read/write/mmap failed (errno text in the message) */
    DS4_ERR_FORMAT,        /* a file or payload is malformed, truncated or inconsistent */
    DS4_ERR_UNSUPPORTED,   /* well-formed but not something ds4 handles (type, version, shape) */
    DS4_ERR_NOMEM,         /* allocation failed or a requested size is out of bounds */
    DS4_ERR_RANGE,         /* a position/count exceeds a limit (e.g. context overflow) */
    DS4_ERR_STATE,         /* call not valid in the object's current state */
    DS4_ERR_NOT_FOUND,     /* a named key, tensor or file does not exist */
    DS4_ERR_CANCELLED,     /* stopped on request */
    DS4_ERR_INTERNAL       /* a bug: an invariant did not hold */
} ds4_status;

/* Caller-owned error record. `msg` says what, where, expected and got. */
typedef struct ds4_error {
    ds4_status code;
    char msg[512];
} ds4_error;

/* Static English name of a status ("format error", ...). Never NULL. */
const char *ds4_status_str(ds4_status st);

/* ---- Library ----------------------------------------------------------------------------- */

/* Version string of the library; static. */
const char *ds4_version(void);

/* ---- Tokenizer (src/text/tokenizer*.c) --------------------------------------------------- */
/* Byte-level BPE exact to the Hugging Face DeepSeek V4 tokenizer (TOKENIZER.md). A tokenizer
 * is immutable once opened and safe to share between threads (its word cache locks itself).
 * Token ids are int32; text is UTF-8 with an explicit byte length (NUL bytes are text). */
typedef struct ds4_tokenizer ds4_tokenizer;

/* Opens a tokenizer from a GGUF model file (tokenizer.ggml.* metadata) or a Hugging Face
 * tokenizer.json; which one is decided by the file's content (GGUF magic), not its name.
 * *out is freed with ds4_tokenizer_free. */
ds4_status ds4_tokenizer_open(ds4_tokenizer **out, const char *path, ds4_error *err);
void ds4_tokenizer_free(ds4_tokenizer *tok);

/* Number of ids (GGUF tokens array length; 129280 for V4). Valid ids are 0 .. n-1. */
uint32_t ds4_tokenizer_n_vocab(const ds4_tokenizer *tok);

/* Encode flags. By default every added token (all 1283 in V4, special or not) is recognised
 * anywhere in the text, as Hugging Face does; no BOS/EOS is added (TOKENIZER.md §3.1).
 * SPECIAL_AS_TEXT: recognise none, so user content such as "<｜User｜>" is plain BPE text and
 * can never become a control token. (Stricter than HF's split_special_tokens, which still
 * recognises non-special added tokens such as <｜User｜>.) */
#define DS4_TOKENIZE_SPECIAL_AS_TEXT 0x1u

/* Tokenizes text_bytes bytes of text. *out_ids is malloc'd (caller frees with free(); NULL
 * when *out_n_tokens is 0). Invalid UTF-8 is accepted: each invalid byte matches no
 * pre-tokenizer class, so it lands in a gap piece and is encoded by its byte symbol; decoding
 * with DS4_DETOKENIZE_RAW_BYTES returns the input bytes exactly. */
ds4_status ds4_tokenize(const ds4_tokenizer *tok, const char *text, size_t text_bytes,
                        uint32_t flags, int32_t **out_ids, size_t *out_n_tokens, ds4_error *err);
/* Number of tokens ds4_tokenize would return, without keeping the ids. */
ds4_status ds4_tokenize_count(const ds4_tokenizer *tok, const char *text, size_t text_bytes,
                              uint32_t flags, size_t *out_n_tokens, ds4_error *err);

/* Decode flags. SKIP_SPECIAL drops ids whose added token is `special` (BOS, EOS, pad,
 * placeholders; not chat markers such as <｜User｜> or <think>, TOKENIZER.md §3.6).
 * RAW_BYTES returns the bytes as they are; by default invalid UTF-8 sequences are replaced
 * by U+FFFD exactly as Hugging Face's lossy conversion does. */
#define DS4_DETOKENIZE_SKIP_SPECIAL 0x1u
#define DS4_DETOKENIZE_RAW_BYTES    0x2u

/* Decodes n_tokens ids to text. *out_text is malloc'd and NUL-terminated (caller frees;
 * *out_bytes excludes the NUL). An id outside 0 .. n_vocab-1 is DS4_ERR_RANGE naming it. */
ds4_status ds4_detokenize(const ds4_tokenizer *tok, const int32_t *ids, size_t n_tokens,
                          uint32_t flags, char **out_text, size_t *out_bytes, ds4_error *err);

/* Id of the added token whose content is exactly `text` (e.g. "<｜User｜>" -> 128803), or
 * DS4_ERR_NOT_FOUND. Only added tokens are searched, not the BPE vocabulary. */
ds4_status ds4_tokenizer_special_id(const ds4_tokenizer *tok, const char *text, int32_t *out_id,
                                    ds4_error *err);
/* True when id is an added token (special or not) / an added token flagged `special`. */
bool ds4_tokenizer_is_added(const ds4_tokenizer *tok, int32_t id);
bool ds4_tokenizer_is_special(const ds4_tokenizer *tok, int32_t id);
/* The bytes one token decodes to (not UTF-8-checked). *out points into the tokenizer and lives
 * as long as it. DS4_ERR_RANGE for a bad id. */
ds4_status ds4_tokenizer_token_bytes(const ds4_tokenizer *tok, int32_t id, const char **out,
                                     size_t *out_bytes, ds4_error *err);

/* Streaming decoder: feed ids one at a time, get the text that is complete. Never emits a
 * broken UTF-8 sequence: bytes of an incomplete character are held back until it completes,
 * an invalid sequence becomes U+FFFD as in ds4_detokenize, and ds4_detok_stream_flush emits
 * what is held (one U+FFFD for a truncated character). The concatenation of everything emitted
 * equals ds4_detokenize of the same ids with the same flags (RAW_BYTES is not accepted here).
 * The stream keeps a pointer to tok, which must outlive it. */
typedef struct ds4_detok_stream ds4_detok_stream;
ds4_status ds4_detok_stream_create(ds4_detok_stream **out, const ds4_tokenizer *tok,
                                   uint32_t flags, ds4_error *err);
/* Feeds one id. *out_text / *out_bytes: text now complete (may be 0 bytes); the pointer is
 * owned by the stream and valid until the next call on it. */
ds4_status ds4_detok_stream_push(ds4_detok_stream *s, int32_t id, const char **out_text,
                                 size_t *out_bytes, ds4_error *err);
/* Emits the held bytes (as U+FFFD when they are an incomplete character) and resets the
 * stream for reuse. Same output contract as push. */
ds4_status ds4_detok_stream_flush(ds4_detok_stream *s, const char **out_text, size_t *out_bytes,
                                  ds4_error *err);
void ds4_detok_stream_free(ds4_detok_stream *s);

/* ---- Chat encoding and DSML (src/text/chat.c, src/text/dsml.c) --------------------------- */
/*
 * Renders conversations exactly like DeepSeek's official V4 encoder (CHAT_ENCODING.md §3-§7)
 * and parses generated text back into reasoning, content and DSML tool calls (§6, §8).
 * All strings are UTF-8 and NUL-terminated; every input string is copied.
 */

/* Thinking mode (CHAT_ENCODING §4). HIGH and MAX both render thinking mode; MAX adds the
 * reasoning-effort prefix after BOS (§2.2, §4.4). */
typedef enum ds4_thinking {
    DS4_THINKING_NONE = 0, /* chat mode: each assistant turn opens with </think> */
    DS4_THINKING_HIGH,
    DS4_THINKING_MAX
} ds4_thinking;

typedef enum ds4_chat_role {
    DS4_ROLE_SYSTEM = 0,
    DS4_ROLE_USER,
    DS4_ROLE_ASSISTANT,
    DS4_ROLE_TOOL,
    DS4_ROLE_DEVELOPER,       /* user-like turn of the official search-agent pipeline */
    DS4_ROLE_LATEST_REMINDER  /* rendered as <｜latest_reminder｜> + content */
} ds4_chat_role;

/* One tool call of an assistant message (history) — borrowed strings, copied by the callee. */
typedef struct ds4_tool_call {
    const char *id;        /* nullable; used to order tool results (§3.1) */
    const char *name;
    const char *arguments; /* JSON text; anything but an object renders as one "arguments"
                              string parameter holding the raw text (§6.1) */
} ds4_tool_call;

/* One message. NULL strings mean "absent". */
typedef struct ds4_chat_msg {
    ds4_chat_role role;
    const char *content;
    const char *reasoning;            /* assistant reasoning_content */
    const ds4_tool_call *tool_calls;  /* assistant */
    size_t n_tool_calls;
    const char *tool_call_id;         /* tool */
    const char *task;                 /* NULL or action/query/authority/domain/title/read_url (§7) */
    bool wo_eos;                      /* assistant: leave the EOS off (prefill) */
    const char *tools_json;           /* system/developer: JSON array of OpenAI
                                         {type,function:{...}} or Anthropic {name,description,
                                         input_schema} tools (§5) */
    const char *response_format_json; /* system/developer: JSON value (§5.2) */
    const char *tool_calls_dsml;      /* assistant, nullable: the tool block exactly as sampled
                                         (ds4_parsed.dsml, separator included), rendered instead
                                         of re-rendering tool_calls, so history replays the
                                         model's bytes (SERVER_CLI §5.3); tool_calls still give
                                         the ids that order tool results. Trusted model output:
                                         ds4_chat_render_tokens keeps its markers as control
                                         tokens, so pass only bytes the model produced, never
                                         client text */
} ds4_chat_msg;

typedef struct ds4_chat ds4_chat;

/* New empty conversation. Free with ds4_chat_free. */
ds4_status ds4_chat_create(ds4_chat **out, ds4_thinking thinking, ds4_error *err);
void ds4_chat_free(ds4_chat *chat);
void ds4_chat_set_thinking(ds4_chat *chat, ds4_thinking thinking);
ds4_thinking ds4_chat_get_thinking(const ds4_chat *chat);
size_t ds4_chat_n_msgs(const ds4_chat *chat);

/* Appends a copy of msg; validates the JSON fields and the role/field combination. */
ds4_status ds4_chat_add(ds4_chat *chat, const ds4_chat_msg *msg, ds4_error *err);

/* Request-level tools (JSON array, OpenAI or Anthropic shape): attached to the first message
 * if it is system/developer, else to a new empty system message put first — what the official
 * test harness does with test_input_1.json's top-level "tools". Replaces earlier ones. Call it
 * after adding the messages (the first message decides where the tools go). */
ds4_status ds4_chat_set_tools(ds4_chat *chat, const char *tools_json, ds4_error *err);

/* Conversation in the official test-input shape: either an array of messages or an object
 * {"messages": [...], "tools"?: [...], "thinking_mode"?: "thinking"|"chat",
 *  "reasoning_effort"?: "max"|"high"|null, "thinking"?: "none"|"high"|"max"}.
 * Messages use OpenAI fields (role, content, reasoning_content, tool_calls, tool_call_id,
 * task, wo_eos, tools, response_format; "mask" is ignored). Default thinking: HIGH.
 * Errors name the JSON path; jansson parse errors give line and column. */
ds4_status ds4_chat_from_json(ds4_chat **out, const char *json, size_t json_bytes,
                              ds4_error *err);

/* Renders the prompt (BOS first). *out is malloc'd, NUL-terminated, caller frees with free();
 * *out_bytes (nullable) gets its length. */
ds4_status ds4_chat_render(const ds4_chat *chat, char **out, size_t *out_bytes, ds4_error *err);

/* Renders the prompt and tokenizes it safely: the template's markers become control tokens,
 * while every client-supplied byte (message content, reasoning, tool results, tool schemas,
 * response_format, history tool-call names and arguments) is plain BPE text, so a user typing
 * "<｜User｜>" or "</think>" cannot inject a control token. A tool_calls_dsml block is the
 * model's own sampled output and is tokenized like the template. Plain text between control
 * tokens is pre-tokenized across those boundaries as in the whole-string path, so the ids equal
 * ds4_tokenize(render, flags 0) whenever the client text holds no added-token text (and a new
 * turn's ids extend the previous turn's, as before).
 * DS4_CHAT_TRUST_CONTENT: recognise added tokens in client text too (the unsafe whole-string
 * tokenization; for tooling that replays official vectors).
 * *out_ids malloc'd (caller frees; NULL when none). out_text / out_text_bytes are nullable and
 * receive the rendered prompt (malloc'd, NUL-terminated) and its length. */
#define DS4_CHAT_TRUST_CONTENT 0x1u
ds4_status ds4_chat_render_tokens(const ds4_chat *chat, const ds4_tokenizer *tok, uint32_t flags,
                                  int32_t **out_ids, size_t *out_n_tokens, char **out_text,
                                  size_t *out_text_bytes, ds4_error *err);

/* The official tools block (§5.1) for a JSON array of tools, without the leading "\n\n".
 * *out malloc'd, caller frees. */
ds4_status ds4_chat_render_tools(const char *tools_json, char **out, size_t *out_bytes,
                                 ds4_error *err);

/* Canonical DSML for tool calls, as rendered in history (§6.1): "\n\n<｜DSML｜tool_calls>…
 * </｜DSML｜tool_calls>" ("" for n_calls == 0). *out malloc'd, caller frees. */
ds4_status ds4_dsml_render_calls(const ds4_tool_call *calls, size_t n_calls, char **out,
                                 size_t *out_bytes, ds4_error *err);

/* ---- Parsing a completion (src/text/dsml.c, src/text/dsml_stream.c) ---- */

#define DS4_TOOL_ID_MAX 64 /* bytes of a tool-call id, NUL included */

/* One parsed call; strings owned by the ds4_parsed that holds it. */
typedef struct ds4_parsed_call {
    char *id;        /* from ds4_dsml_opts.make_id, or NULL */
    char *name;
    char *arguments; /* JSON object text, official layout: {"k": "v", "n": 1} (§8.4) */
} ds4_parsed_call;

/* Result of parsing one assistant turn. Free the members with ds4_parsed_clear. */
typedef struct ds4_parsed {
    char *reasoning;          /* "" when none */
    size_t reasoning_bytes;
    char *content;
    size_t content_bytes;
    ds4_parsed_call *calls;
    size_t n_calls;
    char *dsml;               /* the tool block exactly as generated, with the whitespace that
                                 preceded it (for exact replay); "" when no valid block */
    size_t dsml_bytes;
    bool malformed_dsml;      /* a block started but was invalid; its text went to content */
} ds4_parsed;

void ds4_parsed_clear(ds4_parsed *p);

typedef enum ds4_dsml_event_kind {
    DS4_DSML_REASONING = 0, /* text: reasoning bytes */
    DS4_DSML_CONTENT,       /* text: content bytes */
    DS4_DSML_CALL_START,    /* call_index, id, name: a complete <invoke name="..."> was seen */
    DS4_DSML_CALL_ARGS,     /* call_index, text: next bytes of the arguments JSON */
    DS4_DSML_CALL_END,      /* call_index: arguments JSON complete */
    DS4_DSML_CALLS_ABORT    /* the tool block turned out malformed: forget every call reported
                               so far; the block's text follows as CONTENT events */
} ds4_dsml_event_kind;

typedef struct ds4_dsml_event {
    ds4_dsml_event_kind kind;
    size_t call_index;
    const char *id;   /* CALL_START: may be NULL */
    const char *name; /* CALL_START */
    const char *text; /* REASONING/CONTENT/CALL_ARGS; not NUL-terminated; valid during the call */
    size_t text_bytes;
} ds4_dsml_event;

/* Return nonzero to stop: the feed/finish call then returns DS4_ERR_CANCELLED. */
typedef int (*ds4_dsml_event_fn)(void *user, const ds4_dsml_event *ev);
/* Writes a NUL-terminated id (< DS4_TOOL_ID_MAX bytes) for call `call_index` into id;
 * returns 0 on success. */
typedef int (*ds4_dsml_id_fn)(void *user, size_t call_index, char *id);

typedef struct ds4_dsml_opts {
    bool thinking;  /* the prompt ended with <think>: text starts as reasoning until </think> */
    bool tools;     /* look for a DSML tool block in the content */
    ds4_dsml_event_fn on_event; /* nullable */
    void *event_user;
    ds4_dsml_id_fn make_id;     /* nullable: calls get NULL ids */
    void *id_user;
} ds4_dsml_opts;

typedef struct ds4_dsml_parser ds4_dsml_parser;

/* Streaming parser: feed pieces of generated text in order (any split, even inside a UTF-8
 * character or a tag), then finish. Events come as early as the text allows; deltas never end
 * inside a UTF-8 character except at finish. The result of finish is identical for every way of
 * splitting the same text, and equals the concatenation of the events. */
ds4_status ds4_dsml_parser_create(ds4_dsml_parser **out, const ds4_dsml_opts *opts,
                                  ds4_error *err);
void ds4_dsml_parser_free(ds4_dsml_parser *p);
ds4_status ds4_dsml_feed(ds4_dsml_parser *p, const char *text, size_t text_bytes,
                         ds4_error *err);
/* Flushes what was held back and fills *out (caller clears it with ds4_parsed_clear). Feeding
 * after finish is DS4_ERR_STATE. */
ds4_status ds4_dsml_finish(ds4_dsml_parser *p, ds4_parsed *out, ds4_error *err);

/* At once: same result as create + feed(all) + finish. */
ds4_status ds4_dsml_parse(const char *text, size_t text_bytes, const ds4_dsml_opts *opts,
                          ds4_parsed *out, ds4_error *err);

/* ---- Engine and sessions (src/model/) ------------------------------------------------------ */

/*
 * An engine is one loaded model (weights mapped read-only, shared by every session). Distinct
 * sessions may be driven from different threads (one thread per session at a time); their
 * forward passes take turns on the engine's worker pool. A session is one token stream with its
 * KV / compressor state (MODEL_MATH §13).
 *
 * Session state machine:
 *
 *     create ──► EMPTY (pos 0, no logits) ──eval/sync──► LIVE (pos n, logits of token n-1)
 *                   ▲                                      │  ▲
 *                   └─────────── reset / rewind(0) ────────┘  └─ eval / sync / rewind(p>0) /
 *                                                                restore
 * Any failed eval leaves the session EMPTY (its state would be half-written); the error says so.
 */

typedef struct ds4_engine ds4_engine;
typedef struct ds4_session ds4_session;

typedef struct ds4_engine_options {
    int n_threads;           /* worker threads; <= 0 = one per online core */
    const char *backend;     /* "cpu" (default when NULL) */
    const char *mtp_path;    /* optional companion MTP GGUF (GGUF_LAYOUT §3.8); NULL = none */
    bool prefault;           /* true: read every weight page at open; false: lazy mmap page-in */
    bool exact_activations;  /* checking mode: quantized weights dotted with f32 activations
                                (decoded row by row) instead of ds4's Q8_0/Q8_K activations, so
                                logits equal the dequantized-F32 model's; slower. Default false */
    /* Backend "cuda" only (issue #7): how many layers keep their routed experts
     * (ffn_{gate,up,down}_exps) in device memory; the experts of the other layers — the first
     * ones — stay in pinned host memory that the kernels read over PCIe (slower per token;
     * docs/BENCHMARKS.md "experts in host memory"), so a model larger than the card still runs
     * (q2 Flash, 80.76 GiB, on one 80 GB H100). -1 (the default) = as many as fit: when the
     * weights plus the state of gpu_ctx_tokens do not fit the device's free memory, the first
     * layers' experts move to the host until they do (ds4_model_info says how many), and the
     * open fails with DS4_ERR_NOMEM when even all of them on the host does not fit.
     * 0..n_layer = exactly that many (DS4_ERR_INVALID_ARG beyond). Must stay -1 with "cpu". */
    int gpu_layers_experts;
    /* Backend "cuda": context tokens of device state (summed over the sessions to come) the
     * auto-fit leaves room for; 0 (default) = 32768. */
    uint32_t gpu_ctx_tokens;
} ds4_engine_options;

/* Fills defaults: all cores, "cpu", no MTP, lazy page-in, gpu_layers_experts -1 (auto). */
void ds4_engine_options_init(ds4_engine_options *opt);

/* The backend the tools use when none is asked for: "cuda" in a CUDA build (`make cuda`) with a
 * usable GPU, else "cpu". A static string. */
const char *ds4_default_backend(void);

/* Opens a V4 GGUF. opt may be NULL (defaults). *out is owned by the caller until
 * ds4_engine_close, which must come after every session of it is freed. */
ds4_status ds4_engine_open(ds4_engine **out, const char *gguf_path, const ds4_engine_options *opt,
                           ds4_error *err);
void ds4_engine_close(ds4_engine *engine);

typedef struct ds4_model_info {
    uint32_t n_vocab;
    uint32_t n_ctx_max;      /* longest context the model supports (metadata) */
    uint32_t n_layer;
    uint32_t n_embd;
    uint32_t n_head;
    uint32_t n_expert;
    uint32_t n_expert_used;
    bool has_mtp;
    uint64_t weight_bytes;   /* tensor data bytes of the main model */
    uint8_t model_id[32];    /* identity hash carried by snapshots (see ds4_engine_open docs in
                                src/model/engine.c: metadata + tensor table + weight samples) */
    /* Backend "cuda" (0 for "cpu"): layers whose routed experts are in device memory, and the
     * bytes of the other layers' routed experts, in pinned host memory (gpu_layers_experts). */
    uint32_t gpu_layers_experts;
    uint64_t host_expert_bytes;
} ds4_model_info;

ds4_status ds4_engine_info(const ds4_engine *engine, ds4_model_info *out, ds4_error *err);

/* Host memory a session of n_ctx tokens needs: total = fixed_bytes + n_ctx * kv_bytes_per_token
 * (MODEL_MATH §13 table), not counting the weights. */
typedef struct ds4_memory_estimate {
    uint64_t fixed_bytes;
    uint64_t kv_bytes_per_token;
    uint64_t total_bytes;
} ds4_memory_estimate;

ds4_status ds4_engine_memory_estimate(const ds4_engine *engine, uint32_t n_ctx,
                                      ds4_memory_estimate *out, ds4_error *err);

/* Creates an empty session holding up to n_ctx tokens (1 <= n_ctx <= n_ctx_max). */
ds4_status ds4_session_create(ds4_session **out, ds4_engine *engine, uint32_t n_ctx,
                              ds4_error *err);
void ds4_session_free(ds4_session *s);

/* Tokens per forward-pass call during sync / eval_tokens (default 256 on the CPU, 2048 on the
 * GPU, where batched prefill needs large chunks). Results do not depend on it (MODEL_MATH §7.4);
 * it trades memory for speed. ds4_session_prefill_chunk returns the current value (0 for NULL):
 * callers that sync in steps (progress bars) should step by at least that much. */
ds4_status ds4_session_set_prefill_chunk(ds4_session *s, uint32_t n_tokens, ds4_error *err);
uint32_t ds4_session_prefill_chunk(const ds4_session *s);

/* What a sync / rewind did. */
typedef struct ds4_sync_stats {
    uint32_t n_reused;       /* tokens of the old state kept */
    uint32_t n_evaluated;    /* tokens run through the model by this call */
    bool rebuilt;            /* the state was discarded (or a checkpoint restored) first */
} ds4_sync_stats;

/* Brings the session to exactly tokens[0..n_tokens): keeps the longest common prefix when the
 * live tokens are a prefix of the target, otherwise rebuilds (from the rewind checkpoint when it
 * is a prefix of the target, else from token 0) and evaluates the rest. 1 <= n_tokens <= n_ctx
 * (DS4_ERR_RANGE beyond). stats may be NULL. */
ds4_status ds4_session_sync(ds4_session *s, const int32_t *tokens, uint32_t n_tokens,
                            ds4_sync_stats *stats, ds4_error *err);

/* Appends one token at the current position. DS4_ERR_RANGE when the session already holds n_ctx
 * tokens (nothing changes). */
ds4_status ds4_session_eval(ds4_session *s, int32_t token, ds4_error *err);

/* Appends n_tokens tokens; when logits_out is non-NULL it receives the logits after every one of
 * them, row-major [n_tokens, n_vocab] (used by --dump-logits). */
ds4_status ds4_session_eval_tokens(ds4_session *s, const int32_t *tokens, uint32_t n_tokens,
                                   float *logits_out, ds4_error *err);

/* Remembers the current state as the rewind checkpoint (one per session; replaces the previous
 * one; costs one state copy: ds4_session_snapshot_bytes). */
ds4_status ds4_session_checkpoint(ds4_session *s, ds4_error *err);

/* Shortens the stream to its first pos tokens. The compressed state cannot be truncated in place
 * (MODEL_MATH §6.4: pooled windows and the sliding ring forget), so this restores the checkpoint
 * when it lies at or before pos, else resets, then re-evaluates up to pos: cost = pos - max(0,
 * checkpoint) evaluated tokens. rewind(0) empties the session. stats may be NULL. */
ds4_status ds4_session_rewind(ds4_session *s, uint32_t pos, ds4_sync_stats *stats, ds4_error *err);

/* Empties the session (keeps its memory and checkpoint). */
void ds4_session_reset(ds4_session *s);

/* Logits after the last evaluated token: *out points at n_vocab floats owned by the session,
 * valid until the next eval/sync/rewind/restore/reset/free. DS4_ERR_STATE when empty. With
 * backend "cuda" a decode step leaves them on the GPU; the first call after it downloads them
 * (ds4_session_sample draws without them). */
ds4_status ds4_session_logits(const ds4_session *s, const float **out, ds4_error *err);

/* Number of tokens in the stream (= position of the next token). */
uint32_t ds4_session_pos(const ds4_session *s);
uint32_t ds4_session_ctx(const ds4_session *s);

/* The live tokens, owned by the session, valid like ds4_session_logits; *n_tokens = pos. */
const int32_t *ds4_session_tokens(const ds4_session *s, uint32_t *n_tokens);

typedef struct ds4_token_logprob {
    int32_t token;
    float logprob;           /* natural log of softmax probability (temperature 1) */
} ds4_token_logprob;

/* The k most likely next tokens, most likely first (ties: lower id first); *n_out = min(k, vocab). */
ds4_status ds4_session_top_logprobs(const ds4_session *s, uint32_t k, ds4_token_logprob *out,
                                    uint32_t *n_out, ds4_error *err);

/*
 * Snapshots: the whole session (tokens, logits, every KV/compressor row) as one versioned,
 * SHA-256-checksummed blob carrying the model identity (format: src/model/snapshot.h). Restoring
 * one and continuing gives the same logits as never having stopped. A snapshot from another model,
 * for more tokens than the session's context, from a future version, truncated or corrupt is
 * refused and leaves the session unchanged (only a payload that passes the checksum and every
 * container check but fails the model's own checks empties the session; the error says so).
 */
ds4_status ds4_session_snapshot_bytes(const ds4_session *s, uint64_t *out_bytes, ds4_error *err);
/* *out is malloc'd (caller frees with free()). */
ds4_status ds4_session_snapshot(const ds4_session *s, uint8_t **out, uint64_t *out_bytes,
                                ds4_error *err);
ds4_status ds4_session_restore(ds4_session *s, const uint8_t *buf, uint64_t n_bytes,
                               ds4_error *err);
/* File variants: the save goes through PATH.tmp + fsync + rename, so PATH is never half written. */
ds4_status ds4_session_save_file(const ds4_session *s, const char *path, ds4_error *err);
ds4_status ds4_session_load_file(ds4_session *s, const char *path, ds4_error *err);

/* ---- Sampling (src/model/sampling.c) ------------------------------------------------------- */

/*
 * Order (SERVER_CLI §3.2.3, made explicit): penalties → greedy shortcut (temperature <= 0 or
 * top_k == 1) → top-k by logit → softmax at temperature → min-p (keep p >= min_p · p_max) →
 * top-p (smallest most-likely-first set whose mass reaches top_p; the best token always stays)
 * → draw. Ties in logits order by lower token id, so results do not depend on sort stability.
 * The PRNG is xoshiro256** seeded through splitmix64: the same seed, logits and call sequence
 * give the same tokens on every platform.
 */
typedef struct ds4_sampling_params {
    float temperature;         /* <= 0: greedy (argmax) */
    int32_t top_k;             /* <= 0: whole vocabulary */
    float top_p;               /* >= 1: off */
    float min_p;               /* <= 0: off */
    uint64_t seed;
    float repeat_penalty;      /* 1: off; > 1 divides positive / multiplies negative logits of
                                  tokens among the last repeat_last_n accepted ones */
    uint32_t repeat_last_n;
    float presence_penalty;    /* subtracted once from a seen token's logit */
    float frequency_penalty;   /* subtracted per occurrence */
} ds4_sampling_params;

typedef struct ds4_sampler ds4_sampler;

/* Defaults of the reference server: temperature 1, top_k 0, top_p 1, min_p 0.05, seed 0,
 * no penalties. */
void ds4_sampling_params_init(ds4_sampling_params *p);

/* Validates p (finite, non-negative, top_p in (0,1], min_p in [0,1]) and creates a sampler
 * for a vocabulary of n_vocab tokens. Free with ds4_sampler_free. */
ds4_status ds4_sampler_create(ds4_sampler **out, const ds4_sampling_params *p, uint32_t n_vocab,
                              ds4_error *err);
void ds4_sampler_free(ds4_sampler *smp);

/* Draws the next token from logits[n_vocab] (not modified). */
ds4_status ds4_sampler_sample(ds4_sampler *smp, const float *logits, int32_t *out_token,
                              ds4_error *err);

/* Records a token that entered the stream (prompt or generated) for the penalties. */
void ds4_sampler_accept(ds4_sampler *smp, int32_t token);

/* Forgets the penalty history and reseeds the PRNG with seed. */
void ds4_sampler_reset(ds4_sampler *smp, uint64_t seed);

/* The next token drawn by smp from the logits after the session's last evaluated token: the
 * token (and PRNG advance) of ds4_session_logits + ds4_sampler_sample, without recording it
 * (call ds4_sampler_accept). With backend "cuda" the draw runs on the GPU and only the token id
 * crosses the bus (issue #7); the logits stay available through ds4_session_logits.
 * DS4_ERR_STATE when the session is empty; DS4_ERR_INVALID_ARG when smp is for another
 * vocabulary size or no logit is finite. */
ds4_status ds4_session_sample(ds4_session *s, ds4_sampler *smp, int32_t *out_token, ds4_error *err);

/* Index of the largest finite logit (lowest index on ties); -1 if none is finite. */
int32_t ds4_argmax(const float *logits, uint32_t n_vocab);

/* The k largest log-softmax values of logits[n_vocab], best first (ties: lower id first);
 * *n_out = min(k, n_vocab). */
ds4_status ds4_logits_top_logprobs(const float *logits, uint32_t n_vocab, uint32_t k,
                                   ds4_token_logprob *out, uint32_t *n_out, ds4_error *err);

#ifdef __cplusplus
}
#endif

#endif /* DS4_H */
