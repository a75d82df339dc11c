/*
 * tools/ds4/chat.h — internals of the `ds4` chat mode (one-shot -p and the REPL) shared by
 * chat_args.c (flags), chat_run.c (engine, prompt tokens, generation), chat_save.c (/save,
 * /load), chat_repl.c (libedit loop and slash commands), progress.c (terminal bars and styles)
 * and demo.c (--demo model). Must not: reach into libds4 internals beyond the demo-model builder
 * (model/demo.h) and the disk KV store (srv_kv_*), both through their headers.
 *
 * Prompt layout (CHAT_ENCODING §9 item 2, SERVER_CLI §10.3-§10.4): the transcript is
 *   header = BOS [Think-Max prefix] system-text
 *   body   = per turn: <｜User｜> text <｜Assistant｜> (<think>|</think>) sampled tokens EOS
 * kept as token ids, so a later turn shares every earlier token and only its own are prefilled.
 * User and system text are plain BPE (never scanned for special tokens). Earlier reasoning stays
 * in the transcript, as in ds4's REPL (unlike the official encoder's drop-thinking rule).
 */
#ifndef DS4_TOOL_CHAT_H
#define DS4_TOOL_CHAT_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "ds4.h"

/* Think Max needs this much context (CHAT_ENCODING §4.4). */
#define CHAT_THINK_MAX_MIN_CTX 393216u
#define CHAT_DEFAULT_SYSTEM "You are a helpful assistant"

/* ---- Flags (chat_args.c) ------------------------------------------------------------------- */

typedef struct chat_opts {
    const char *model_path;    /* -m; default ./ds4flash.gguf */
    const char *prompt;        /* -p */
    const char *prompt_file;   /* --prompt-file */
    const char *system;        /* --system; "" = none */
    uint32_t n_ctx;            /* --ctx; 0 = default (32768, capped at the model's maximum) */
    uint32_t n_predict;        /* -n */
    ds4_thinking thinking;
    ds4_sampling_params sp;    /* --temp --top-p --top-k --min-p --seed */
    bool seed_given;
    int n_threads;             /* --threads; 0 = engine default */
    const char *backend;       /* --backend cpu|cuda; NULL = ds4_default_backend() at open */
    int gpu_layers_experts;    /* --gpu-layers-experts N (cuda); -1 = as many as fit */
    const char *mtp_path;      /* --mtp */
    const char *kv_disk_dir;   /* --kv-disk-dir */
    uint64_t kv_disk_mb;       /* --kv-disk-space-mb */
    uint32_t kv_min_tokens;    /* --kv-cache-min-tokens */
    bool show_reasoning;       /* --show-reasoning: also when stdout is not a terminal */
    bool demo;                 /* --demo */
    const char *tokenizer;     /* --tokenizer (for --demo) */
    int warm;                  /* --warm-weights 1, --no-warm-weights 0, -1 = auto */
    bool help;
} chat_opts;

/* Parses argv (the whole command line). Returns 0, or 2 after printing the reason and a hint
 * to stderr. */
int chat_args_parse(chat_opts *o, int argc, char **argv);
void chat_usage(FILE *f);

/* ---- Terminal (progress.c) ----------------------------------------------------------------- */

extern volatile sig_atomic_t chat_interrupted; /* set by the REPL's SIGINT handler */

double chat_now_s(void);
/* One updating line on stderr: "LABEL [=====>    ] done/total UNIT  rate UNIT/s  ETA". Only
 * when stderr is a terminal; bar_end clears it. */
typedef struct chat_bar {
    bool on;
    const char *label, *unit;
    double t0, last;
    double scale;              /* display divisor for done/total (1, or 2^30 for GiB) */
} chat_bar;
void chat_bar_start(chat_bar *b, const char *label, const char *unit, double scale);
void chat_bar_update(chat_bar *b, uint64_t done, uint64_t total);
void chat_bar_end(chat_bar *b);

/* Reads the model file once through the page cache with a bar, so the lazy mmap of the engine
 * later finds it resident (the "paging in" the user would otherwise wait for silently during
 * the first prefill). Skipped when it would not fit in RAM unless forced. */
void chat_warm_file(const char *path, int warm);

/* ---- Conversation and generation (chat_run.c) ---------------------------------------------- */

typedef struct chat_turn_stats {
    uint32_t n_prompt;         /* tokens of the whole prompt after this turn's user message */
    uint32_t n_reused;         /* of those, kept from the live session (or the disk cache) */
    uint32_t n_prefilled;      /* evaluated by this turn's prefill */
    uint32_t n_from_disk;      /* restored from --kv-disk-dir */
    double prefill_s;
    uint32_t n_generated;
    double gen_s;
    const char *stop;          /* "eos", "limit", "context", "interrupted", "error" */
} chat_turn_stats;

typedef struct chat_state {
    chat_opts *o;
    ds4_engine *eng;
    ds4_tokenizer *tok;
    ds4_session *sess;
    ds4_sampler *smp;
    ds4_model_info info;
    struct srv_kvstore *kv;
    char model_id[69];         /* "ds4:" + hex of info.model_id, as the server's disk cache */
    uint32_t n_ctx;
    int32_t id_bos, id_eos, id_user, id_assistant, id_think, id_think_end;

    ds4_thinking thinking;     /* mode asked for (MAX may be gated to HIGH by the context) */
    char *system;              /* owned; "" = none */
    int32_t *header;           /* BOS [max prefix] system */
    uint32_t n_header;
    int32_t *body;             /* the turns */
    uint32_t n_body, cap_body;
    int32_t *scratch;          /* header ++ body for sync */
    uint32_t cap_scratch;
    json_t *msgs;              /* OpenAI-shaped messages of the turns (no system) */
    uint32_t n_turns;
    char *attached;            /* /read text waiting for the next user line; owned */

    bool out_tty, err_tty;
    bool show_reasoning;
    chat_turn_stats last;
} chat_state;

/* Opens model, tokenizer, session and sampler from o (printing what is wrong and returning 1).
 * Prints the paging-in bar and, for a missing model, how to get one. */
int chat_open(chat_state *st, chat_opts *o);
void chat_close(chat_state *st);

/* Rebuilds the header tokens for the current system text and thinking mode (Think Max gated by
 * the session context, with a warning). Returns 0 or 1 (message printed). */
int chat_set_header(chat_state *st);
/* Recreates the session with n_ctx tokens (KV dropped, transcript kept). */
int chat_set_ctx(chat_state *st, uint32_t n_ctx);
/* Forgets the turns (header kept). */
void chat_clear(chat_state *st);

/* Runs one turn: appends the user message, prefills what is new, streams the answer to stdout
 * (reasoning styled or hidden), appends it to the transcript, prints the summary line. On an
 * interrupted or failed prefill the transcript is rolled back. Returns 0 ok (also when
 * interrupted during generation), 1 on failure. */
int chat_turn(chat_state *st, const char *text, size_t text_bytes);
/* One-shot with a prompt that is already a rendered chat (it starts with BOS, SERVER_CLI §10.3):
 * tokenized with special tokens recognized, nothing added; header and turns are replaced. */
int chat_turn_rendered(chat_state *st, const char *text, size_t text_bytes);

/* The summary line of the last turn, on stderr. */
void chat_print_summary(const chat_state *st);
/* /stats */
void chat_print_stats(const chat_state *st);

/* Saves the live session under its tokens in --kv-disk-dir (no-op without one or when shorter
 * than --kv-cache-min-tokens). */
void chat_kv_store(chat_state *st);

/* ---- /save and /load (chat_save.c) -------------------------------------------------------- */

/* FILE holds the conversation as JSON (OpenAI-shaped messages plus the token transcript);
 * FILE.kv holds the session snapshot. Returns 0 or 1 (message printed). */
int chat_save(chat_state *st, const char *path);
int chat_load(chat_state *st, const char *path);

/* ---- REPL (chat_repl.c) -------------------------------------------------------------------- */

int chat_repl(chat_state *st);

/* ---- --demo (demo.c) ----------------------------------------------------------------------- */

/* Path of the cached demo model, created on first use from the real V4 tokenizer with random
 * weights. Returns a malloc'd path or NULL (message printed). */
char *chat_demo_model(const char *tokenizer_flag);

#endif
