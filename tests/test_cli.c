/*
 * tests/test_cli.c — the `ds4` chat CLI (issue #5) run as a program on the --demo model (random
 * weights, real V4 tokenizer, made once per build tree), through a pseudo-terminal where the
 * REPL needs one: one-shot output (checked against libds4 directly), a 3-turn session whose
 * later turns prefill only their own tokens, Ctrl+C during generation and at the prompt,
 * /save + /load reproducing the next answer token for token, argument and missing-model errors.
 */
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "cli_pty.h"
#include "ds4.h"
#include "testutil.h"

/* ---- Fixture ------------------------------------------------------------------------------- */

static char *abs_path(const char *p) {
    char *r = realpath(p, NULL);
    cr_assert_not_null(r, "realpath %s: %s", p, strerror(errno));
    return r;
}

/* abs_path of a malloc'd path, which it frees. */
static char *abs_take(char *p) {
    char *r = abs_path(p);
    free(p);
    return r;
}

/* Directory of the demo model cache shared by these tests (XDG_CACHE_HOME of the children). */
static char *cache_dir(void) {
    const char *base = getenv("DS4_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0777);
    char *d = tu_join(base, "cli-cache");
    mkdir(d, 0777);
    return abs_take(d);
}

/* Makes the demo model once (under a lock: test jobs run in parallel) and returns its path. */
static char *demo_model(void) {
    char *cache = cache_dir(), *lock = tu_join(cache, "lock");
    char *bin = abs_take(tu_bin_path("ds4"));
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/ds4/demo-%s.gguf", cache, ds4_version());
    int fd = open(lock, O_CREAT | O_RDWR, 0666);
    cr_assert_geq(fd, 0);
    flock(fd, LOCK_EX);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        char cmd[PATH_MAX * 3], *out = NULL;
        snprintf(cmd, sizeof cmd, "XDG_CACHE_HOME=%s %s --demo -n 2 --threads 1", cache, bin);
        int rc = tu_run(cmd, &out);
        cr_assert_eq(rc, 0, "%s failed: %s", cmd, out);
        cr_assert(strstr(out, "random weights: the output is noise"), "demo label missing: %s", out);
        free(out);
    }
    flock(fd, LOCK_UN);
    close(fd);
    cr_assert_eq(stat(path, &sb), 0, "no demo model at %s", path);
    free(cache);
    free(lock);
    free(bin);
    return strdup(path);
}

typedef struct cli_env {
    char *home;
    char *vars[4];
} cli_env;

static void env_init(cli_env *e) {
    e->home = abs_take(tu_tmpdir());
    char *cache = cache_dir();
    size_t n = strlen(e->home) + 64;
    e->vars[0] = malloc(n);
    snprintf(e->vars[0], n, "HOME=%s", e->home);
    e->vars[1] = malloc(n);
    snprintf(e->vars[1], n, "XDG_STATE_HOME=%s/state", e->home);
    e->vars[2] = malloc(strlen(cache) + 32);
    snprintf(e->vars[2], strlen(cache) + 32, "XDG_CACHE_HOME=%s", cache);
    e->vars[3] = NULL;
    free(cache);
}

static void env_free(cli_env *e) {
    for (int i = 0; e->vars[i]; i++) free(e->vars[i]);
    free(e->home);
}

/* argv for ds4 + args (NULL-terminated list of up to 30). */
typedef struct argv_t {
    char *v[40];
    int n;
} argv_t;

static void av_init(argv_t *a, const char *model) {
    a->n = 0;
    a->v[a->n++] = abs_take(tu_bin_path("ds4"));
    if (model) {
        a->v[a->n++] = strdup("-m");
        a->v[a->n++] = strdup(model);
    }
    a->v[a->n++] = strdup("--threads");
    a->v[a->n++] = strdup("1");
    a->v[a->n] = NULL;
}

static void av_add(argv_t *a, const char *s) {
    cr_assert_lt(a->n, 38);
    a->v[a->n++] = strdup(s);
    a->v[a->n] = NULL;
}

static void av_free(argv_t *a) {
    for (int i = 0; i < a->n; i++) free(a->v[i]);
    a->n = 0;
}

/* ---- Summary line ------------------------------------------------------------------------------ */

typedef struct summary {
    unsigned prompt, reused, prefilled, generated;
    char stop[32];
} summary;

/* Waits for the next "ds4: prompt ..." line and parses it. */
static summary next_summary(pty_run *p, double timeout_s) {
    size_t at = pr_expect(p, "ds4: prompt ", timeout_s);
    pr_expect(p, "\n", 10);
    summary s = {0};
    const char *l = p->buf + at;
    cr_assert_eq(sscanf(l, "ds4: prompt %u tokens (reused %u", &s.prompt, &s.reused), 2, "bad summary: %.200s", l);
    const char *q = strstr(l, "prefilled ");
    cr_assert(q && sscanf(q, "prefilled %u", &s.prefilled) == 1, "bad summary: %.200s", l);
    q = strstr(l, "generated ");
    cr_assert(q && sscanf(q, "generated %u", &s.generated) == 1, "bad summary: %.200s", l);
    q = strstr(l, "stop: ");
    cr_assert(q && sscanf(q, "stop: %31s", s.stop) == 1, "bad summary: %.200s", l);
    return s;
}

/* Tokens the CLI adds for one user turn: <｜User｜> text <｜Assistant｜> <think> (SERVER_CLI §10.4). */
static unsigned turn_tokens(const ds4_tokenizer *tok, const char *text) {
    size_t n = 0;
    ds4_error err = {0};
    cr_assert_eq(ds4_tokenize_count(tok, text, strlen(text), DS4_TOKENIZE_SPECIAL_AS_TEXT, &n, &err), DS4_OK, "%s",
                 err.msg);
    return (unsigned)n + 3;
}

static ds4_tokenizer *open_tok(const char *model) {
    ds4_tokenizer *tok = NULL;
    ds4_error err = {0};
    cr_assert_eq(ds4_tokenizer_open(&tok, model, &err), DS4_OK, "%s", err.msg);
    return tok;
}

/* Header: BOS + the default system text. */
static unsigned header_tokens(const ds4_tokenizer *tok) {
    size_t n = 0;
    const char *sys = "You are a helpful assistant";
    cr_assert_eq(ds4_tokenize_count(tok, sys, strlen(sys), DS4_TOKENIZE_SPECIAL_AS_TEXT, &n, NULL), DS4_OK);
    return (unsigned)n + 1;
}

/* Prompt of turn k+1 after turn k (prompt p, generated g): every earlier token, the answer's
 * closing EOS (unless the model sampled it) and the new turn. Of those, the live session holds
 * all but the last sampled token (sampled, never evaluated) and that EOS. */
static void check_next_turn(const summary *prev, const summary *cur, unsigned new_turn, const char *what) {
    bool eos = !strcmp(prev->stop, "eos");
    unsigned expect_prompt = prev->prompt + prev->generated + (eos ? 0 : 1) + new_turn;
    unsigned expect_reused = prev->prompt + prev->generated - 1;
    cr_assert_eq(cur->prompt, expect_prompt, "%s: prompt %u tokens, expected %u (previous %u + %u generated + turn %u)",
                 what, cur->prompt, expect_prompt, prev->prompt, prev->generated, new_turn);
    cr_assert_eq(cur->reused, expect_reused, "%s: reused %u, expected %u", what, cur->reused, expect_reused);
    cr_assert_eq(cur->prefilled, cur->prompt - cur->reused, "%s: prefilled %u, expected only the new %u tokens", what,
                 cur->prefilled, cur->prompt - cur->reused);
}

/* ---- One-shot -------------------------------------------------------------------------------- */

/* What each terminal (pty) test holds: the demo model, its tokenizer, a private HOME and the
 * ds4 argv (model and --threads 1; tests add their flags before pr_start). */
typedef struct pty_case {
    char *model;
    ds4_tokenizer *tok;
    cli_env e;
    argv_t a;
    pty_run p;
} pty_case;

static void pc_init(pty_case *c) {
    c->model = demo_model();
    c->tok = open_tok(c->model);
    env_init(&c->e);
    av_init(&c->a, c->model);
}

/* After pr_start: frees the run, argv, HOME, tokenizer and model path. */
static void pc_free(pty_case *c) {
    pr_free(&c->p);
    av_free(&c->a);
    env_free(&c->e);
    ds4_tokenizer_free(c->tok);
    free(c->model);
}

Test(cli_oneshot, pty_streams_reasoning_styled_and_reports_counts, .timeout = 120) {
    pty_case c;
    pc_init(&c);
    const char *prompt = "Hello there, how are you?";
    av_add(&c.a, "-p"), av_add(&c.a, prompt);
    av_add(&c.a, "-n"), av_add(&c.a, "12"), av_add(&c.a, "--seed"), av_add(&c.a, "5");
    pr_start(&c.p, c.a.v, c.e.vars);
    summary s = next_summary(&c.p, 60);
    int rc = pr_wait(&c.p, 30);
    cr_assert_eq(rc, 0, "exit %d; output:\n%s", rc, c.p.buf);
    unsigned expect = header_tokens(c.tok) + turn_tokens(c.tok, prompt);
    cr_assert_eq(s.prompt, expect, "prompt tokens %u, expected %u", s.prompt, expect);
    cr_assert_eq(s.reused, 0);
    cr_assert_eq(s.prefilled, expect, "prefilled %u of %u", s.prefilled, expect);
    cr_assert(s.generated == 12 || !strcmp(s.stop, "eos"), "generated %u, stop %s", s.generated, s.stop);
    /* A terminal shows the reasoning dim italic (thinking is the default). */
    cr_assert(strstr(c.p.buf, "\033[2;3m"), "no reasoning style in:\n%s", c.p.buf);
    pc_free(&c);
}

/* Greedy one-shot into a pipe: stdout is exactly the greedy continuation libds4 computes for
 * the officially rendered prompt (so the CLI's token-level prompt equals the V4 encoding). */
Test(cli_oneshot, pipe_output_equals_official_prompt_greedy_decode, .timeout = 120) {
    char *model = demo_model();
    ds4_tokenizer *tok = open_tok(model);
    const char *prompt = "Name three colours.";
    const unsigned n_gen = 10;
    /* Expected: the prompt libds4's official V4 encoder renders for [system, user] in chat mode
     * (CHAT_ENCODING §3-§4.1), tokenized with special tokens recognized; then argmax decoding. */
    ds4_error err = {0};
    ds4_chat *chat = NULL;
    cr_assert_eq(ds4_chat_create(&chat, DS4_THINKING_NONE, &err), DS4_OK);
    ds4_chat_msg m_sys = {.role = DS4_ROLE_SYSTEM, .content = "You are a helpful assistant"};
    ds4_chat_msg m_user = {.role = DS4_ROLE_USER, .content = prompt};
    cr_assert_eq(ds4_chat_add(chat, &m_sys, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_chat_add(chat, &m_user, &err), DS4_OK, "%s", err.msg);
    char *rendered = NULL;
    size_t rendered_bytes = 0;
    cr_assert_eq(ds4_chat_render(chat, &rendered, &rendered_bytes, &err), DS4_OK, "%s", err.msg);
    int32_t *toks = NULL;
    size_t n_toks = 0;
    cr_assert_eq(ds4_tokenize(tok, rendered, rendered_bytes, 0, &toks, &n_toks, &err), DS4_OK, "%s", err.msg);
    uint32_t n = (uint32_t)n_toks;
    int32_t eos;
    cr_assert_eq(ds4_tokenizer_special_id(tok, "<｜end▁of▁sentence｜>", &eos, &err), DS4_OK);
    ds4_engine *eng = NULL;
    ds4_session *s = NULL;
    ds4_engine_options o;
    ds4_engine_options_init(&o);
    o.n_threads = 1;
    cr_assert_eq(ds4_engine_open(&eng, model, &o, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_session_create(&s, eng, 512, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_session_sync(s, toks, n, NULL, &err), DS4_OK, "%s", err.msg);
    int32_t gen[16];
    unsigned n_out = 0;
    for (unsigned i = 0; i < n_gen; i++) {
        const float *l;
        ds4_session_logits(s, &l, NULL);
        int32_t t = ds4_argmax(l, ds4_tokenizer_n_vocab(tok));
        if (t == eos) break;
        gen[n_out++] = t;
        if (i + 1 < n_gen) cr_assert_eq(ds4_session_eval(s, t, &err), DS4_OK, "%s", err.msg);
    }
    cr_assert_gt(n_out, 0, "greedy decoding ended at once");
    char *text = NULL;
    size_t text_bytes = 0;
    cr_assert_eq(ds4_detokenize(tok, gen, n_out, 0, &text, &text_bytes, &err), DS4_OK);
    ds4_session_free(s);
    ds4_engine_close(eng);

    char *bin = abs_take(tu_bin_path("ds4")), cmd[8192], *out = NULL;
    snprintf(cmd, sizeof cmd, "( %s -m %s --threads 1 --nothink --temp 0 -n %u -p '%s' 2>/dev/null )", bin, model,
             n_gen, prompt);
    int rc = tu_run(cmd, &out);
    cr_assert_eq(rc, 0, "%s: exit %d: %s", cmd, rc, out);
    size_t ol = strlen(out);
    bool nl = text_bytes && text[text_bytes - 1] == '\n';
    cr_assert_eq(ol, text_bytes + (nl ? 0 : 1), "stdout has %zu bytes, greedy text %zu:\n[%s]\n[%s]", ol, text_bytes,
                 out, text);
    cr_assert(memcmp(out, text, text_bytes) == 0, "stdout differs from the greedy decode:\n[%s]\n[%s]", out, text);
    free(out);
    free(text);
    free(bin);
    free(toks);
    free(rendered);
    ds4_chat_free(chat);
    ds4_tokenizer_free(tok);
    free(model);
}

/* ---- REPL ------------------------------------------------------------------------------------ */

Test(cli_repl, three_turns_prefill_only_their_own_tokens, .timeout = 180) {
    pty_case c;
    pc_init(&c);
    av_add(&c.a, "-n"), av_add(&c.a, "6"), av_add(&c.a, "--seed"), av_add(&c.a, "3");
    pr_start(&c.p, c.a.v, c.e.vars);
    const char *turns[3] = {"What is the capital of France?", "And of Italy?", "Thanks, bye"};
    summary s[3];
    for (int i = 0; i < 3; i++) {
        pr_expect(&c.p, "ds4> ", 60);
        char line[256];
        snprintf(line, sizeof line, "%s\r", turns[i]);
        pr_send(&c.p, line);
        s[i] = next_summary(&c.p, 60);
    }
    unsigned first = header_tokens(c.tok) + turn_tokens(c.tok, turns[0]);
    cr_assert_eq(s[0].prompt, first, "turn 1: prompt %u, expected %u", s[0].prompt, first);
    cr_assert_eq(s[0].prefilled, first);
    check_next_turn(&s[0], &s[1], turn_tokens(c.tok, turns[1]), "turn 2");
    check_next_turn(&s[1], &s[2], turn_tokens(c.tok, turns[2]), "turn 3");
    /* /stats reports the transcript length: all three turns, answers closed. */
    pr_expect(&c.p, "ds4> ", 30);
    pr_send(&c.p, "/stats\r");
    pr_expect(&c.p, "tokens in the transcript", 30);
    pr_expect(&c.p, "ds4> ", 30);
    pr_send(&c.p, "/quit\r");
    int rc = pr_wait(&c.p, 30);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, pr_tail(&c.p));
    /* History file with the lines typed. */
    char hist[PATH_MAX];
    snprintf(hist, sizeof hist, "%s/state/ds4/history", c.e.home);
    size_t hl = 0;
    char *h = tu_read_file(hist, &hl);
    /* libedit's history file escapes spaces (vis(3)): look for a word. */
    cr_assert(strstr(h, "Italy?") && strstr(h, "France?"), "history %s lacks a typed line:\n%s", hist, h);
    free(h);
    pc_free(&c);
}

/* Waits until the answer is streaming (the reasoning style was printed), then presses Ctrl+C. */
static summary interrupt_turn(pty_run *p, const char *text) {
    char line[256];
    snprintf(line, sizeof line, "%s\r", text);
    pr_send(p, line);
    pr_expect(p, "\033[2;3m", 60);
    double t = pr_now();
    while (pr_now() - t < 0.5) pr_pump(p, 0.1);
    pr_send(p, "\003");
    pr_expect(p, "[interrupted]", 30);
    return next_summary(p, 30);
}

Test(cli_repl, ctrl_c_stops_the_answer_and_keeps_the_conversation, .timeout = 180) {
    pty_case c;
    pc_init(&c);
    av_add(&c.a, "-n"), av_add(&c.a, "100000"), av_add(&c.a, "--seed"), av_add(&c.a, "9");
    pr_start(&c.p, c.a.v, c.e.vars);
    pr_expect(&c.p, "ds4> ", 60);
    /* Ctrl+C at the prompt: a fresh prompt, not an exit. */
    pr_send(&c.p, "\003");
    pr_expect(&c.p, "ds4> ", 30);
    summary s1 = interrupt_turn(&c.p, "Tell me a very long story.");
    cr_assert_str_eq(s1.stop, "interrupted");
    cr_assert_gt(s1.generated, 0);
    cr_assert_lt(s1.generated, 100000);
    pr_expect(&c.p, "ds4> ", 30);
    summary s2 = interrupt_turn(&c.p, "Another one, please.");
    cr_assert_str_eq(s2.stop, "interrupted");
    check_next_turn(&s1, &s2, turn_tokens(c.tok, "Another one, please."), "turn after Ctrl+C");
    pr_expect(&c.p, "ds4> ", 30);
    pr_send(&c.p, "\004"); /* Ctrl+D leaves */
    int rc = pr_wait(&c.p, 30);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, pr_tail(&c.p));
    pc_free(&c);
}

/* Ctrl+C during a long prefill (a /read attachment) drops that message; the next turn resumes
 * from the state before it (the rewind checkpoint), not from token 0. */
Test(cli_repl, ctrl_c_during_prefill_drops_the_message, .timeout = 180) {
    pty_case c;
    pc_init(&c);
    char *file = tu_join(c.e.home, "long.txt");
    static const char *const words[] = {"alpha ", "river ", "stone ", "light ", "seven "};
    size_t cap = 4000 * 6 + 1, len = 0;
    char *text = malloc(cap);
    for (int i = 0; i < 4000; i++) len += (size_t)snprintf(text + len, cap - len, "%s", words[(i * 7 + i / 3) % 5]);
    tu_write_file(file, text, len);
    av_add(&c.a, "-n"), av_add(&c.a, "4"), av_add(&c.a, "--seed"), av_add(&c.a, "2");
    pr_start(&c.p, c.a.v, c.e.vars);
    pr_expect(&c.p, "ds4> ", 60);
    pr_send(&c.p, "hello\r");
    summary s1 = next_summary(&c.p, 60);
    pr_expect(&c.p, "ds4> ", 30);
    char line[PATH_MAX + 16];
    snprintf(line, sizeof line, "/read %s\r", file);
    pr_send(&c.p, line);
    pr_expect(&c.p, "ds4: attached", 30);
    pr_expect(&c.p, "ds4> ", 30);
    pr_send(&c.p, "summarize this\r");
    pr_expect(&c.p, "prefill [", 60);
    pr_send(&c.p, "\003");
    pr_expect(&c.p, "interrupted during prefill", 60);
    summary s2 = next_summary(&c.p, 30);
    cr_assert_str_eq(s2.stop, "interrupted");
    cr_assert_lt(s2.reused + s2.prefilled, s2.prompt, "the prefill was not interrupted: %u + %u of %u", s2.reused,
                 s2.prefilled, s2.prompt);
    pr_expect(&c.p, "ds4> ", 30);
    pr_send(&c.p, "next\r");
    summary s3 = next_summary(&c.p, 60);
    check_next_turn(&s1, &s3, turn_tokens(c.tok, "next"), "turn after an interrupted prefill");
    pr_expect(&c.p, "ds4> ", 30);
    pr_send(&c.p, "/quit\r");
    cr_assert_eq(pr_wait(&c.p, 30), 0);
    free(text);
    free(file);
    pc_free(&c);
}

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    cr_assert_not_null(j, "%s: %s", path, je.text);
    return j;
}

/* Runs the REPL with --seed 11 at temperature 1 on `script` lines, waiting for each answer or
 * command acknowledgement. Returns the summary of the last answer. */
static summary run_script(const char *model, const cli_env *e, const char *const *lines, int n) {
    argv_t a;
    av_init(&a, model);
    av_add(&a, "-n"), av_add(&a, "10"), av_add(&a, "--seed"), av_add(&a, "11"), av_add(&a, "--temp"), av_add(&a, "1");
    pty_run p;
    pr_start(&p, a.v, e->vars);
    summary last = {0};
    for (int i = 0; i < n; i++) {
        pr_expect(&p, "ds4> ", 60);
        char line[1024];
        snprintf(line, sizeof line, "%s\r", lines[i]);
        pr_send(&p, line);
        if (!strncmp(lines[i], "/save", 5)) pr_expect(&p, "ds4: saved", 30);
        else if (!strncmp(lines[i], "/load", 5)) pr_expect(&p, "ds4: loaded", 30);
        else last = next_summary(&p, 60);
    }
    pr_expect(&p, "ds4> ", 30);
    pr_send(&p, "/quit\r");
    int rc = pr_wait(&p, 30);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, pr_tail(&p));
    if (lines[0][0] == '/') cr_assert(strstr(p.buf, "restored without prefill"), "%s", pr_tail(&p));
    pr_free(&p);
    av_free(&a);
    return last;
}

Test(cli_repl, save_then_load_reproduces_the_next_answer, .timeout = 240) {
    char *model = demo_model();
    cli_env e;
    env_init(&e);
    char a_json[PATH_MAX], g_json[PATH_MAX], h_json[PATH_MAX], cmd_a[PATH_MAX + 8], cmd_g[PATH_MAX + 8],
        cmd_h[PATH_MAX + 8], cmd_l[PATH_MAX + 8];
    snprintf(a_json, sizeof a_json, "%s/after-alpha.json", e.home);
    snprintf(g_json, sizeof g_json, "%s/straight.json", e.home);
    snprintf(h_json, sizeof h_json, "%s/reloaded.json", e.home);
    snprintf(cmd_a, sizeof cmd_a, "/save %s", a_json);
    snprintf(cmd_g, sizeof cmd_g, "/save %s", g_json);
    snprintf(cmd_h, sizeof cmd_h, "/save %s", h_json);
    snprintf(cmd_l, sizeof cmd_l, "/load %s", a_json);
    const char *straight[] = {"alpha question", cmd_a, "beta question", cmd_g};
    summary sa = run_script(model, &e, straight, 4);
    const char *reloaded[] = {cmd_l, "beta question", cmd_h};
    summary sb = run_script(model, &e, reloaded, 3);
    /* The resumed process prefilled only the new turn: the snapshot carried the rest. */
    cr_assert_eq(sb.prompt, sa.prompt, "prompt %u vs %u", sb.prompt, sa.prompt);
    cr_assert_eq(sb.prefilled, sa.prefilled, "after /load prefilled %u tokens, straight run %u", sb.prefilled,
                 sa.prefilled);
    cr_assert_gt(sa.generated, 0);
    json_t *g = load_json(g_json), *h = load_json(h_json);
    json_t *gt = json_object_get(g, "body_tokens"), *ht = json_object_get(h, "body_tokens");
    cr_assert(json_is_array(gt) && json_array_size(gt) > 0);
    cr_assert(json_equal(gt, ht), "the answer after /load differs from the straight run:\n%s\nvs\n%s",
              json_dumps(gt, JSON_COMPACT), json_dumps(ht, JSON_COMPACT));
    cr_assert(json_equal(json_object_get(g, "messages"), json_object_get(h, "messages")), "messages differ");
    cr_assert_eq(json_array_size(json_object_get(g, "messages")), 5, "system + 2 user + 2 assistant messages expected");
    /* The snapshot files exist beside the JSON. */
    char kv[PATH_MAX + 4];
    snprintf(kv, sizeof kv, "%s.kv", a_json);
    struct stat sbf;
    cr_assert_eq(stat(kv, &sbf), 0, "no snapshot %s", kv);
    json_decref(g);
    json_decref(h);
    env_free(&e);
    free(model);
}

/* ---- Errors ---------------------------------------------------------------------------------- */

static int run_ds4(const char *args, char **out) {
    char *bin = tu_bin_path("ds4"), cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s", bin, args);
    free(bin);
    return tu_run(cmd, out);
}

Test(cli_args, bad_flags_are_usage_errors) {
    static const struct {
        const char *args, *msg;
    } cases[] = {
        {"--bogus", "unknown option '--bogus'"},
        {"--temp abc -p hi", "--temp needs a number in [0, 100], got 'abc'"},
        {"--top-p 1.5 -p hi", "--top-p needs a number in [0, 1], got '1.5'"},
        {"--top-p 0 -p hi", "--top-p must be above 0 (1 = off), got '0'"},
        {"-n 0 -p hi", "-n needs an integer in [1, "},
        {"--seed 0 -p hi", "--seed needs an integer in [1, "},
        {"--ctx", "--ctx needs a value"},
        {"-p a --prompt-file b", "specify only one prompt source"},
        {"--think --nothink -p a", "at most one of --think, --think-max, --nothink"},
        {"--backend metal -p a", "--backend is cpu or cuda, got 'metal'"},
        {"--server", "use ds4-server for the HTTP server"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        int rc = run_ds4(cases[i].args, &out);
        cr_assert_eq(rc, 2, "ds4 %s: exit %d, expected 2: %s", cases[i].args, rc, out);
        cr_assert(strstr(out, cases[i].msg), "ds4 %s: expected \"%s\" in: %s", cases[i].args, cases[i].msg, out);
        free(out);
    }
    char *out = NULL;
    cr_assert_eq(run_ds4("--help", &out), 0);
    cr_assert(strstr(out, "--kv-disk-dir") && strstr(out, "--think-max"), "help: %s", out);
    free(out);
}

Test(cli_args, missing_model_says_how_to_get_one) {
    char *dir = tu_tmpdir(), args[1024], *out = NULL;
    snprintf(args, sizeof args, "-m %s/none.gguf -p hi", dir);
    int rc = run_ds4(args, &out);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "not found") && strstr(out, "./download_model.sh q2") && strstr(out, "ds4-convert") &&
                  strstr(out, "./ds4 --demo"),
              "message: %s", out);
    free(out);
    /* The default path is ./ds4flash.gguf, relative to the working directory. */
    char cmd[2048];
    char *bin = abs_take(tu_bin_path("ds4"));
    snprintf(cmd, sizeof cmd, "cd %s && %s -p hi", dir, bin);
    rc = tu_run(cmd, &out);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "./ds4flash.gguf not found"), "message: %s", out);
    free(out);
    free(bin);
    free(dir);
}

Test(cli_args, runtime_errors_exit_1, .timeout = 120) {
    char *model = demo_model(), args[4096], *out = NULL;
    snprintf(args, sizeof args, "-m %s --backend cuda -p hi", model);
    int rc = run_ds4(args, &out);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "not built with CUDA"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "-m %s --ctx 4000000000 -p hi", model);
    rc = run_ds4(args, &out);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "exceeds the model's context"), "%s", out);
    free(out);
    free(model);
}

/* ---- --kv-disk-dir -------------------------------------------------------------------------- */

/* A second one-shot with the same prompt resumes it from the disk KV cache (the server's store)
 * instead of prefilling, and answers the same (greedy). */
Test(cli_kvdisk, second_run_resumes_the_prompt_from_disk, .timeout = 120) {
    char *model = demo_model(), *dir = tu_tmpdir(), args[4096], *out1 = NULL, *out2 = NULL, *err2 = NULL;
    const char *common =
        "--temp 0 -n 6 --threads 1 --show-reasoning --kv-cache-min-tokens 8 -p 'A prompt long enough to cache.'";
    /* stdout only (tu_run appends 2>&1 outside the group). */
    snprintf(args, sizeof args, "-m %s --kv-disk-dir %s/kv %s 2>/dev/null | cat", model, dir, common);
    cr_assert_eq(run_ds4(args, &out1), 0, "%s", out1);
    cr_assert_eq(run_ds4(args, &out2), 0, "%s", out2);
    cr_assert(strlen(out1) > 1, "no answer: [%s]", out1);
    cr_assert_str_eq(out1, out2, "the resumed run answered differently");
    snprintf(args, sizeof args, "-m %s --kv-disk-dir %s/kv %s 2>&1 >/dev/null | cat", model, dir, common);
    cr_assert_eq(run_ds4(args, &err2), 0, "%s", err2);
    unsigned prompt = 0, reused = 0, disk = 0, prefilled = 99;
    const char *l = strstr(err2, "ds4: prompt ");
    cr_assert(l && sscanf(l, "ds4: prompt %u tokens (reused %u, %u from disk cache, prefilled %u", &prompt, &reused,
                          &disk, &prefilled) == 4,
              "no disk-cache summary in: %s", err2);
    cr_assert_eq(disk, prompt, "restored %u of %u prompt tokens", disk, prompt);
    cr_assert_eq(prefilled, 0);
    free(out1);
    free(out2);
    free(err2);
    free(dir);
    free(model);
}

Test(cli_args, demo_without_a_tokenizer_says_where_it_looked) {
    char *dir = tu_tmpdir(), *bin = abs_take(tu_bin_path("ds4")), cmd[8192], *out = NULL;
    /* An empty cache and a tokenizer path that does not exist: nothing is made. */
    snprintf(cmd, sizeof cmd, "cd %s && XDG_CACHE_HOME=%s/cache DS4_TOKENIZER=%s/none.json %s --demo", dir, dir, dir,
             bin);
    int rc = tu_run(cmd, &out);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "--demo needs the DeepSeek V4 tokenizer.json") && strstr(out, "DS4_TOKENIZER"), "%s", out);
    free(out);
    char path[8192];
    snprintf(path, sizeof path, "%s/cache/ds4/demo-%s.gguf", dir, ds4_version());
    cr_assert_neq(access(path, F_OK), 0, "%s was made without a tokenizer", path);
    snprintf(cmd, sizeof cmd, "%s --demo -m x.gguf", bin);
    rc = tu_run(cmd, &out);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "--demo makes its own model"), "%s", out);
    free(out);
    free(bin);
    free(dir);
}

/* SERVER_CLI §10.3: a prompt starting with BOS is an already rendered chat, used as it is: the
 * official rendering of [system, user] answers exactly like the plain prompt. */
Test(cli_oneshot, rendered_prompt_is_used_verbatim, .timeout = 120) {
    char *model = demo_model(), *bin = abs_take(tu_bin_path("ds4")), cmd[8192], *plain = NULL, *raw = NULL;
    const char *tail = "--threads 1 --temp 0 -n 6 --show-reasoning 2>/dev/null | cat";
    snprintf(cmd, sizeof cmd, "%s -m %s --nothink -p 'Hi there' %s", bin, model, tail);
    cr_assert_eq(tu_run(cmd, &plain), 0, "%s", plain);
    snprintf(cmd, sizeof cmd,
             "%s -m %s -p '<｜begin▁of▁sentence｜>You are a helpful assistant<｜User｜>Hi there<｜Assistant｜></think>' %s",
             bin, model, tail);
    cr_assert_eq(tu_run(cmd, &raw), 0, "%s", raw);
    cr_assert(strlen(plain) > 1, "no output");
    cr_assert_str_eq(raw, plain, "rendered prompt answered differently");
    free(plain);
    free(raw);
    free(bin);
    free(model);
}

/* Think Max (CHAT_ENCODING §4.4): with a context of 393216 the prompt is the official Think-Max
 * rendering of [system, user]; with less, a warning and normal thinking. */
Test(cli_oneshot, think_max_prompt_and_its_context_gate, .timeout = 120) {
    char *model = demo_model(), *bin = abs_take(tu_bin_path("ds4")), cmd[8192], *out = NULL;
    ds4_tokenizer *tok = open_tok(model);
    const char *prompt = "Prove it.";
    ds4_chat *chat = NULL;
    ds4_error err = {0};
    cr_assert_eq(ds4_chat_create(&chat, DS4_THINKING_MAX, &err), DS4_OK);
    ds4_chat_msg m_sys = {.role = DS4_ROLE_SYSTEM, .content = "You are a helpful assistant"};
    ds4_chat_msg m_user = {.role = DS4_ROLE_USER, .content = prompt};
    cr_assert_eq(ds4_chat_add(chat, &m_sys, &err), DS4_OK);
    cr_assert_eq(ds4_chat_add(chat, &m_user, &err), DS4_OK);
    char *rendered = NULL;
    size_t rb = 0, n_max = 0;
    cr_assert_eq(ds4_chat_render(chat, &rendered, &rb, &err), DS4_OK, "%s", err.msg);
    cr_assert_eq(ds4_tokenize_count(tok, rendered, rb, 0, &n_max, &err), DS4_OK);
    snprintf(cmd, sizeof cmd, "%s -m %s --threads 1 -n 1 --think-max --ctx 393216 -p '%s' 2>&1 >/dev/null | cat", bin,
             model, prompt);
    cr_assert_eq(tu_run(cmd, &out), 0, "%s", out);
    unsigned got = 0;
    const char *l = strstr(out, "ds4: prompt ");
    cr_assert(l && sscanf(l, "ds4: prompt %u", &got) == 1, "%s", out);
    cr_assert_eq(got, (unsigned)n_max, "Think-Max prompt has %u tokens, the official rendering %zu", got, n_max);
    cr_assert_null(strstr(out, "warning"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s -m %s --threads 1 -n 1 --think-max -p '%s' 2>&1 >/dev/null | cat", bin, model,
             prompt);
    cr_assert_eq(tu_run(cmd, &out), 0, "%s", out);
    unsigned high = header_tokens(tok) + turn_tokens(tok, prompt);
    l = strstr(out, "ds4: prompt ");
    cr_assert(l && sscanf(l, "ds4: prompt %u", &got) == 1, "%s", out);
    cr_assert_eq(got, high, "gated Think Max: %u tokens, expected the high-effort %u", got, high);
    cr_assert(strstr(out, "warning: Think Max needs a context of at least 393216"), "%s", out);
    cr_assert_gt(n_max, high + 20, "the Think-Max prefix should add its instruction text");
    free(out);
    free(rendered);
    ds4_chat_free(chat);
    ds4_tokenizer_free(tok);
    free(bin);
    free(model);
}
