/*
 * tests/testutil.h — helpers shared by the Criterion unit tests: where ../shared and the
 * built tools are, reading whole files (failing the test loudly), scratch directories.
 */
#ifndef DS4_TESTUTIL_H
#define DS4_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "ds4.h"

/* Path of `rel` under the shared data dir (DS4_SHARED, default ../shared). Caller frees. */
char *tu_shared_path(const char *rel);

/* Path of a built program (DS4_BIN_DIR, default .). Caller frees. */
char *tu_bin_path(const char *prog);

/* Reads a whole file; fails the current test (cr_fatal) if it cannot. Caller frees. */
void *tu_read_file(const char *path, size_t *len);

/* Reads a whole file under ../shared. Caller frees. */
void *tu_read_shared(const char *rel, size_t *len);

/* Creates a fresh private scratch directory for this test (under DS4_TMP or /tmp). Caller frees. */
char *tu_tmpdir(void);

/* Joins dir and name with '/'. Caller frees. */
char *tu_join(const char *dir, const char *name);

/* Writes bytes to a file, failing the test on error. */
void tu_write_file(const char *path, const void *data, size_t len);

/* Runs a shell command, returns its exit status (or -1); captures stdout+stderr into *out
 * (malloc'd, NUL-terminated) when out is non-NULL. */
int tu_run(const char *cmd, char **out);

/* Opens the shared reconstructed DeepSeek V4 tokenizer.json, failing the test if it cannot.
 * Caller frees with ds4_tokenizer_free. */
ds4_tokenizer *tu_open_v4_tokenizer(void);

/* Calls fn(path, ctx) for each *.json file in dir (a path relative to the repository root,
 * e.g. "tests/data/chat"), in readdir order; fails the test if dir cannot be opened. Returns
 * how many files it visited. */
int tu_for_each_json(const char *dir, void (*fn)(const char *path, void *ctx), void *ctx);

/* Bit-exact float comparison (quants README §0). */
int tu_f32_bits_equal(float a, float b);

#endif
