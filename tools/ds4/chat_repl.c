/*
 * tools/ds4/chat_repl.c — the interactive chat (SERVER_CLI §10.4, issue #5): line editing and
 * history with libedit (history in $XDG_STATE_HOME/ds4/history or ~/.ds4/history), multi-line
 * input (a trailing backslash continues the line; a line of three double quotes opens and
 * closes a paste block), the slash commands, and SIGINT: during generation or a long prefill it
 * stops the turn (checked between tokens / chunks), at the prompt it gives a fresh prompt.
 * Ctrl+D leaves. Must not: build prompts or run the model itself (chat_run.c does).
 */
#include <errno.h>
#include <histedit.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>

#include "chat.h"
#include "cmds.h"

/* ---- Line input ------------------------------------------------------------------------------ */

typedef struct line_in {
    EditLine *el;           /* NULL when stdin is not a terminal: plain getline */
    History *hist;
    char *hist_path;
    const char *prompt;
} line_in;

static char *el_prompt(EditLine *el) {
    line_in *in = NULL;
    el_get(el, EL_CLIENTDATA, &in);
    return (char *)(in ? in->prompt : "ds4> ");
}

static void on_sigint(int sig) {
    (void)sig;
    chat_interrupted = 1;
}

/* libedit's own reader retries a read interrupted by a signal, so Ctrl+C at the prompt would
 * do nothing: this one gives up when the SIGINT flag is set, which makes el_gets return NULL.
 * It waits with poll in short slices so a signal that lands just before the wait (not inside
 * it) is still seen. */
static int repl_getc(EditLine *el, wchar_t *wc) {
    (void)el;
    mbstate_t ps;
    memset(&ps, 0, sizeof ps);
    for (;;) {
        if (chat_interrupted) return -1;
        struct pollfd pf = {.fd = 0, .events = POLLIN};
        int r = poll(&pf, 1, 100);
        if (r == 0 || (r < 0 && errno == EINTR)) continue;
        char c;
        ssize_t n = read(0, &c, 1);
        if (n < 0 && errno == EINTR) {
            if (chat_interrupted) return -1;
            continue;
        }
        if (n <= 0) return n == 0 ? 0 : -1;
        size_t m = mbrtowc(wc, &c, 1, &ps);
        if (m == (size_t)-2) continue;                 /* inside a multi-byte character */
        if (m == (size_t)-1) *wc = (unsigned char)c;   /* invalid: pass the byte on */
        return 1;
    }
}

/* $XDG_STATE_HOME/ds4/history, else ~/.ds4/history (directory created). NULL when neither. */
static char *history_path(void) {
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    char dir[4096];
    if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/ds4", xdg);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.ds4", home);
    else return NULL;
    if (xdg && *xdg) mkdir(xdg, 0700);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return NULL;
    size_t n = strlen(dir) + 16;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/history", dir);
    return p;
}

static void in_open(line_in *in) {
    memset(in, 0, sizeof *in);
    in->prompt = "ds4> ";
    if (!isatty(0)) return;
    setlocale(LC_CTYPE, ""); /* libedit decodes typed UTF-8 by the locale */
    in->el = el_init("ds4", stdin, stdout, stderr);
    if (!in->el) return;
    HistEvent ev;
    in->hist = history_init();
    if (in->hist) {
        history(in->hist, &ev, H_SETSIZE, 1000);
        history(in->hist, &ev, H_SETUNIQUE, 1);
        in->hist_path = history_path();
        if (in->hist_path) history(in->hist, &ev, H_LOAD, in->hist_path);
        el_set(in->el, EL_HIST, history, in->hist);
    }
    el_set(in->el, EL_CLIENTDATA, in);
    el_set(in->el, EL_PROMPT, el_prompt);
    el_set(in->el, EL_EDITOR, "emacs");
    el_set(in->el, EL_GETCFN, repl_getc);
    el_source(in->el, NULL); /* the user's ~/.editrc, if any */
}

static void in_close(line_in *in) {
    if (in->hist) history_end(in->hist);
    if (in->el) el_end(in->el);
    free(in->hist_path);
}

/* One physical line without its newline, malloc'd; NULL at EOF or when interrupted (then
 * chat_interrupted is set). */
static char *in_physical(line_in *in) {
    if (in->el) {
        int count = 0;
        const char *l = el_gets(in->el, &count);
        if (!l || count <= 0) return NULL;
        char *s = strdup(l);
        if (s) {
            size_t n = strlen(s);
            while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = '\0';
        }
        return s;
    }
    /* Piped input: no prompt, so the output holds only the answers. */
    char *s = NULL;
    size_t cap = 0;
    ssize_t n = getline(&s, &cap, stdin);
    if (n < 0) {
        free(s);
        return NULL;
    }
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = '\0';
    return s;
}

static int cat(char **acc, size_t *len, const char *s, bool newline) {
    size_t n = strlen(s);
    char *p = realloc(*acc, *len + n + 2);
    if (!p) return 1;
    if (newline && *len) p[(*len)++] = '\n';
    memcpy(p + *len, s, n + 1);
    *len += n;
    *acc = p;
    return 0;
}

/* A logical input: continuation lines joined by '\n'. NULL at EOF/interrupt. */
static char *in_read(line_in *in) {
    char *acc = NULL;
    size_t len = 0;
    bool block = false;
    in->prompt = "ds4> ";
    for (;;) {
        char *l = in_physical(in);
        if (!l) {
            free(acc);
            return NULL;
        }
        size_t n = strlen(l);
        if (!block && !acc && !strcmp(l, "\"\"\"")) {
            block = true;
            acc = strdup("");
            in->prompt = "\"\"\"> ";
            free(l);
            if (!acc) return NULL;
            continue;
        }
        if (block) {
            if (!strcmp(l, "\"\"\"")) {
                free(l);
                break;
            }
            int bad = cat(&acc, &len, l, len > 0 || acc[0]);
            free(l);
            if (bad) return acc;
            continue;
        }
        bool more = n > 0 && l[n - 1] == '\\';
        if (more) l[n - 1] = '\0';
        int bad = cat(&acc, &len, l, acc != NULL);
        free(l);
        if (bad || !more) break;
        in->prompt = "...> ";
    }
    if (acc && in->hist && *acc) {
        HistEvent ev;
        history(in->hist, &ev, H_ENTER, acc);
        if (in->hist_path) history(in->hist, &ev, H_SAVE, in->hist_path);
    }
    return acc;
}

/* ---- Commands -------------------------------------------------------------------------------- */

static void help(void) {
    fprintf(stderr,
            "Type a message and press Enter. A line ending in \\ continues on the next line; a line\n"
            "of \"\"\" starts a block you end with another \"\"\" (for pasting). Ctrl+C stops an answer,\n"
            "Ctrl+D leaves. Commands:\n"
            "  /help            this list\n"
            "  /think           think before answering, high effort (the default)\n"
            "  /think-max       Think Max (needs a context of %u or more)\n"
            "  /nothink         answer without thinking\n"
            "  /system TEXT     set the system text (\"/system\" alone shows it; \"/system -\" clears)\n"
            "  /ctx N           new context size (keeps the conversation, prefills it again)\n"
            "  /read FILE       attach FILE's text to your next message\n"
            "  /clear           forget the conversation\n"
            "  /save FILE       save the conversation (FILE) and its KV state (FILE.kv)\n"
            "  /load FILE       resume a saved conversation without prefilling it again\n"
            "  /stats           model, context, memory and the last answer's speed\n"
            "  /quit, /exit     leave\n",
            CHAT_THINK_MAX_MIN_CTX);
}

static char *read_text_file(const char *path, size_t *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ds4: /read: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t n;
    ds4_tool_read_why why;
    char *buf = ds4_tool_read_upto(f, 1u << 30, 1, &n, &why);
    if (why == DS4_TOOL_READ_TOO_LARGE) fprintf(stderr, "ds4: /read: %s is too large\n", path);
    else if (why == DS4_TOOL_READ_ERROR) fprintf(stderr, "ds4: /read: reading %s failed\n", path);
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *n_out = n;
    }
    return buf;
}

/* "/cmd arg" -> true when line is cmd alone or cmd + space + argument (*arg, trimmed). */
static bool cmd(const char *line, const char *name, const char **arg) {
    size_t n = strlen(name);
    if (strncmp(line, name, n) != 0 || (line[n] && line[n] != ' ')) return false;
    const char *a = line + n;
    while (*a == ' ') a++;
    *arg = a;
    return true;
}

static void set_thinking(chat_state *st, ds4_thinking t) {
    st->o->thinking = t;
    st->thinking = t;
    chat_set_header(st);
    static const char *const names[] = {"off", "high", "max"};
    fprintf(stderr, "ds4: thinking %s\n", names[st->thinking]);
}

/* Returns 1 to leave the REPL. */
static int command(chat_state *st, const char *line) {
    const char *arg;
    if (cmd(line, "/help", &arg)) help();
    else if (cmd(line, "/quit", &arg) || cmd(line, "/exit", &arg)) return 1;
    else if (cmd(line, "/think-max", &arg)) set_thinking(st, DS4_THINKING_MAX);
    else if (cmd(line, "/think", &arg)) set_thinking(st, DS4_THINKING_HIGH);
    else if (cmd(line, "/nothink", &arg)) set_thinking(st, DS4_THINKING_NONE);
    else if (cmd(line, "/stats", &arg)) chat_print_stats(st);
    else if (cmd(line, "/clear", &arg)) {
        chat_clear(st);
        fprintf(stderr, "ds4: conversation cleared\n");
    } else if (cmd(line, "/system", &arg)) {
        if (!*arg) {
            fprintf(stderr, "system: \"%s\"\n", st->system);
            return 0;
        }
        char *s = strdup(strcmp(arg, "-") ? arg : "");
        if (!s) return 0;
        free(st->system);
        st->system = s;
        chat_set_header(st);
        fprintf(stderr, "ds4: system text set (%zu bytes); the next turn prefills the conversation again\n",
                strlen(s));
    } else if (cmd(line, "/ctx", &arg)) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(arg, &end, 10);
        if (!*arg || *end || errno || v > UINT32_MAX) fprintf(stderr, "ds4: usage: /ctx N\n");
        else if (chat_set_ctx(st, (uint32_t)v) == 0)
            fprintf(stderr, "ds4: new session of %u tokens; the conversation is prefilled on the next turn\n",
                    st->n_ctx);
    } else if (cmd(line, "/read", &arg)) {
        if (!*arg) {
            fprintf(stderr, "ds4: usage: /read FILE\n");
            return 0;
        }
        size_t n = 0;
        char *text = read_text_file(arg, &n);
        if (!text) return 0;
        size_t cap = strlen(arg) + n + 32 + (st->attached ? strlen(st->attached) : 0);
        char *att = malloc(cap);
        if (att) {
            snprintf(att, cap, "%sFile %s:\n```\n%s%s```\n", st->attached ? st->attached : "", arg, text,
                     n && text[n - 1] == '\n' ? "" : "\n");
            free(st->attached);
            st->attached = att;
            size_t n_tok = 0;
            ds4_tokenize_count(st->tok, text, n, DS4_TOKENIZE_SPECIAL_AS_TEXT, &n_tok, NULL);
            fprintf(stderr, "ds4: attached %s (%zu bytes, %zu tokens); it goes with your next message\n", arg, n,
                    n_tok);
        }
        free(text);
    } else if (cmd(line, "/save", &arg)) {
        if (!*arg) fprintf(stderr, "ds4: usage: /save FILE\n");
        else chat_save(st, arg);
    } else if (cmd(line, "/load", &arg)) {
        if (!*arg) fprintf(stderr, "ds4: usage: /load FILE\n");
        else chat_load(st, arg);
    } else {
        fprintf(stderr, "ds4: unknown command %s (/help lists them)\n", line);
    }
    return 0;
}

/* ---- Loop ------------------------------------------------------------------------------------ */

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = '\0';
    return s;
}

int chat_repl(chat_state *st) {
    /* No SA_RESTART: a Ctrl+C at the prompt must end the pending read (libedit then returns). */
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    static const char *const names[] = {"off", "high", "max"};
    fprintf(stderr, "ds4 %s: %s, context %u tokens, thinking %s. /help for commands, Ctrl+D to leave.\n",
            ds4_version(), st->o->model_path, st->n_ctx, names[st->thinking]);
    line_in in;
    in_open(&in);
    for (;;) {
        chat_interrupted = 0;
        char *raw = in_read(&in);
        if (!raw) {
            if (chat_interrupted) {
                fputs("\n", stdout);
                continue;
            }
            if (in.el) fputs("\n", stdout); /* end the prompt line Ctrl+D left */
            break;
        }
        char *line = trim(raw);
        if (!*line) {
            free(raw);
            continue;
        }
        if (line[0] == '/') {
            int quit = command(st, line);
            free(raw);
            if (quit) break;
            continue;
        }
        char *msg = line;
        char *joined = NULL;
        if (st->attached) {
            size_t n = strlen(st->attached) + strlen(line) + 2;
            joined = malloc(n);
            if (joined) {
                snprintf(joined, n, "%s\n%s", st->attached, line);
                msg = joined;
            }
        }
        chat_interrupted = 0;
        if (chat_turn(st, msg, strlen(msg)) == 0 && st->last.n_prompt) {
            if (joined) {
                free(st->attached);
                st->attached = NULL;
            }
            chat_print_summary(st);
        }
        free(joined);
        free(raw);
    }
    in_close(&in);
    chat_kv_store(st);
    sigaction(SIGINT, &old, NULL);
    return 0;
}
