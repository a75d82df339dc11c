/*
 * serve/kvstore.c — disk KV cache files: format, validation, lookup, eviction (see kvstore.h).
 * All file I/O is plain read/write (no mmap next to the mapped model, SERVER_CLI §6.8). One
 * mutex guards the in-memory index; file reads for a lookup happen under it too, which keeps
 * eviction from deleting a file being read.
 */
#include "serve/kvstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safemath.h"
#include "serve/buf.h"

#define KV_MAGIC "DS4KVC\r\n"
#define KV_VERSION 1u
#define KV_FIXED 68u
#define KV_SUM 32u
#define KV_MAX_MODEL_ID 1024u
#define KV_HALF_LIFE_S 21600.0  /* hits decay with a 6 h half-life (SERVER_CLI §6.8) */

typedef struct kv_file {
    char name[65];
    uint64_t n_tokens, bytes, created, last_used;
    uint32_t hits;
} kv_file;

struct srv_kvstore {
    pthread_mutex_t mu;
    char *dir;
    char *model_id;
    uint64_t budget;
    srv_metrics *metrics;
    kv_file *files;
    size_t n_files, cap_files;
    unsigned tmp_seq;
};

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24); }
static void wr64(unsigned char *p, uint64_t v) { wr32(p, (uint32_t)v); wr32(p + 4, (uint32_t)(v >> 32)); }

static void hexify(const unsigned char *d, size_t n, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) { out[2 * i] = hx[d[i] >> 4]; out[2 * i + 1] = hx[d[i] & 15]; }
    out[2 * n] = '\0';
}

static void hash_tokens(EVP_MD_CTX *c, const int32_t *t, size_t n) {
    unsigned char b[4 * 256];
    while (n) {
        size_t k = n < 256 ? n : 256;
        for (size_t i = 0; i < k; i++) wr32(b + 4 * i, (uint32_t)t[i]);
        EVP_DigestUpdate(c, b, 4 * k);
        t += k;
        n -= k;
    }
}

void srv_kv_key(const int32_t *tokens, size_t n, char out[65]) {
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    hash_tokens(c, tokens, n);
    EVP_DigestFinal_ex(c, d, &dl);
    EVP_MD_CTX_free(c);
    hexify(d, 32, out);
}

static char *path_of(const srv_kvstore *kv, const char *name) {
    size_t n = strlen(kv->dir) + strlen(name) + 8;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s.kv", kv->dir, name);
    return p;
}

static void remove_file(srv_kvstore *kv, size_t i, bool evicted) {
    char *p = path_of(kv, kv->files[i].name);
    if (p) unlink(p);
    free(p);
    if (kv->metrics) {
        atomic_fetch_sub(&kv->metrics->disk_bytes, (int_fast64_t)kv->files[i].bytes);
        if (evicted) atomic_fetch_add(&kv->metrics->disk_evictions, 1);
    }
    kv->files[i] = kv->files[--kv->n_files];
}

static bool add_index(srv_kvstore *kv, const kv_file *f) {
    for (size_t i = 0; i < kv->n_files; i++)
        if (strcmp(kv->files[i].name, f->name) == 0) {
            if (kv->metrics) atomic_fetch_sub(&kv->metrics->disk_bytes, (int_fast64_t)kv->files[i].bytes);
            kv->files[i] = *f;
            if (kv->metrics) atomic_fetch_add(&kv->metrics->disk_bytes, (int_fast64_t)f->bytes);
            return true;
        }
    if (kv->n_files == kv->cap_files) {
        size_t cap = kv->cap_files ? kv->cap_files * 2 : 64;
        kv_file *p = realloc(kv->files, cap * sizeof *p);
        if (!p) return false;
        kv->files = p;
        kv->cap_files = cap;
    }
    kv->files[kv->n_files++] = *f;
    if (kv->metrics) atomic_fetch_add(&kv->metrics->disk_bytes, (int_fast64_t)f->bytes);
    return true;
}

/* Reads and checks the fixed header against the file size and our model id. */
static bool read_header(srv_kvstore *kv, int fd, uint64_t file_bytes, kv_file *f, uint64_t *payload,
                        uint64_t *trailer) {
    unsigned char h[KV_FIXED];
    if (pread(fd, h, KV_FIXED, 0) != (ssize_t)KV_FIXED) return false;
    if (memcmp(h, KV_MAGIC, 8) != 0 || rd32(h + 8) != KV_VERSION || rd32(h + 12) != 0) return false;
    uint32_t mlen = rd32(h + 64);
    if (mlen == 0 || mlen > KV_MAX_MODEL_ID || mlen != strlen(kv->model_id)) return false;
    char mid[KV_MAX_MODEL_ID];
    if (pread(fd, mid, mlen, KV_FIXED) != (ssize_t)mlen || memcmp(mid, kv->model_id, mlen) != 0) return false;
    uint64_t n = rd64(h + 40), p = rd64(h + 48), t = rd64(h + 56), tokb, total;
    if (n == 0 || !ds4_mul_u64(&tokb, n, 4) || !ds4_add_u64(&total, KV_FIXED + (uint64_t)mlen + KV_SUM, tokb) ||
        !ds4_add_u64(&total, total, p) || !ds4_add_u64(&total, total, t) || total != file_bytes)
        return false;
    f->n_tokens = n;
    f->bytes = file_bytes;
    f->last_used = rd64(h + 16);
    f->hits = rd32(h + 24);
    f->created = rd64(h + 32);
    *payload = p;
    *trailer = t;
    return true;
}

static bool is_key_name(const char *s, size_t n) {
    if (n != 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static double score(const kv_file *f, uint64_t now) {
    double age = now > f->last_used ? (double)(now - f->last_used) : 0.0;
    double hits = f->hits * pow(2.0, -age / KV_HALF_LIFE_S);
    return (hits + 1.0) * (double)f->n_tokens / (double)(f->bytes ? f->bytes : 1);
}

/* Removes the lowest-scoring files until the total fits; `keep` (or NULL) is protected unless
 * it alone is over budget. */
static void evict(srv_kvstore *kv, const char *keep) {
    uint64_t now = (uint64_t)time(NULL);
    for (;;) {
        uint64_t total = 0;
        for (size_t i = 0; i < kv->n_files; i++) total += kv->files[i].bytes;
        if (total <= kv->budget) return;
        size_t victim = SIZE_MAX;
        for (size_t i = 0; i < kv->n_files; i++) {
            if (keep && strcmp(kv->files[i].name, keep) == 0 && kv->files[i].bytes <= kv->budget) continue;
            if (victim == SIZE_MAX) { victim = i; continue; }
            double a = score(&kv->files[i], now), b = score(&kv->files[victim], now);
            if (a < b || (a == b && kv->files[i].last_used < kv->files[victim].last_used)) victim = i;
        }
        if (victim == SIZE_MAX) return;
        remove_file(kv, victim, true);
    }
}

static ds4_status mkdir_p(const char *dir, ds4_error *err) {
    char *p = strdup(dir);
    if (!p) return ds4_seterr(err, DS4_ERR_NOMEM, "kvstore: out of memory");
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                ds4_status st = ds4_seterr(err, DS4_ERR_IO, "kvstore: cannot create '%s': %s", p, strerror(errno));
                free(p);
                return st;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return DS4_OK;
}

ds4_status srv_kv_open(srv_kvstore **out, const char *dir, uint64_t budget_bytes, const char *model_id,
                       srv_metrics *metrics, ds4_error *err) {
    *out = NULL;
    if (!model_id || !*model_id || strlen(model_id) > KV_MAX_MODEL_ID)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "kvstore: model id must be 1..%u bytes", KV_MAX_MODEL_ID);
    ds4_status st = mkdir_p(dir, err);
    if (st) return st;
    DIR *d = opendir(dir);
    if (!d) return ds4_seterr(err, DS4_ERR_IO, "kvstore: cannot open '%s': %s", dir, strerror(errno));
    srv_kvstore *kv = calloc(1, sizeof *kv);
    if (!kv || !(kv->dir = strdup(dir)) || !(kv->model_id = strdup(model_id))) {
        closedir(d);
        if (kv) { free(kv->dir); free(kv); }
        return ds4_seterr(err, DS4_ERR_NOMEM, "kvstore: out of memory");
    }
    pthread_mutex_init(&kv->mu, NULL);
    kv->budget = budget_bytes;
    kv->metrics = metrics;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t len = strlen(nm);
        char full[4096];
        if (snprintf(full, sizeof full, "%s/%s", dir, nm) >= (int)sizeof full) continue;
        if (strstr(nm, ".kv.tmp.")) { unlink(full); continue; } /* a writer crashed (invariant 1) */
        if (len != 67 || strcmp(nm + 64, ".kv") != 0 || !is_key_name(nm, 64)) continue;
        int fd = open(full, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat sb;
        kv_file f = {0};
        uint64_t p, t;
        bool ok = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && read_header(kv, fd, (uint64_t)sb.st_size, &f, &p, &t);
        close(fd);
        if (!ok) { unlink(full); continue; } /* foreign, truncated or corrupt (invariant 2) */
        memcpy(f.name, nm, 64);
        f.name[64] = '\0';
        add_index(kv, &f);
    }
    closedir(d);
    evict(kv, NULL);
    *out = kv;
    return DS4_OK;
}

void srv_kv_close(srv_kvstore *kv) {
    if (!kv) return;
    pthread_mutex_destroy(&kv->mu);
    free(kv->files);
    free(kv->dir);
    free(kv->model_id);
    free(kv);
}

static bool write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) { if (errno == EINTR) continue; return false; }
        c += w;
        n -= (size_t)w;
    }
    return true;
}

ds4_status srv_kv_save(srv_kvstore *kv, const int32_t *tokens, size_t n, const void *payload,
                       size_t payload_bytes, const void *trailer, size_t trailer_bytes, ds4_error *err) {
    if (n == 0) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "kvstore: empty token prefix");
    size_t mlen = strlen(kv->model_id);
    uint64_t total = KV_FIXED + mlen + KV_SUM, tokb;
    if (!ds4_mul_u64(&tokb, n, 4) || !ds4_add_u64(&total, total, tokb) || !ds4_add_u64(&total, total, payload_bytes) ||
        !ds4_add_u64(&total, total, trailer_bytes))
        return ds4_seterr(err, DS4_ERR_RANGE, "kvstore: snapshot size overflows");
    if (total > kv->budget)
        return ds4_seterr(err, DS4_ERR_RANGE, "kvstore: snapshot of %llu bytes exceeds the %llu-byte budget",
                          (unsigned long long)total, (unsigned long long)kv->budget);
    kv_file f = {0};
    srv_kv_key(tokens, n, f.name);
    f.n_tokens = n;
    f.bytes = total;
    f.created = f.last_used = (uint64_t)time(NULL);

    unsigned char h[KV_FIXED];
    memset(h, 0, sizeof h);
    memcpy(h, KV_MAGIC, 8);
    wr32(h + 8, KV_VERSION);
    wr64(h + 16, f.last_used);
    wr64(h + 32, f.created);
    wr64(h + 40, n);
    wr64(h + 48, payload_bytes);
    wr64(h + 56, trailer_bytes);
    wr32(h + 64, (uint32_t)mlen);

    pthread_mutex_lock(&kv->mu);
    char tmp[4200], *final = path_of(kv, f.name);
    snprintf(tmp, sizeof tmp, "%s/%s.kv.tmp.%d.%u", kv->dir, f.name, (int)getpid(), kv->tmp_seq++);
    ds4_status st = DS4_OK;
    int fd = final ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    if (fd < 0) {
        st = ds4_seterr(err, DS4_ERR_IO, "kvstore: cannot create '%s': %s", tmp, strerror(errno));
        goto out_unlock;
    }
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    EVP_DigestUpdate(c, h + 32, KV_FIXED - 32);
    EVP_DigestUpdate(c, kv->model_id, mlen);
    srv_buf tb;
    srv_buf_init(&tb);
    for (size_t i = 0; i < n; i++) srv_buf_u32(&tb, (uint32_t)tokens[i]);
    EVP_DigestUpdate(c, tb.data, tb.len);
    if (payload_bytes) EVP_DigestUpdate(c, payload, payload_bytes);
    if (trailer_bytes) EVP_DigestUpdate(c, trailer, trailer_bytes);
    unsigned char sum[32];
    unsigned int sl = 0;
    EVP_DigestFinal_ex(c, sum, &sl);
    EVP_MD_CTX_free(c);
    bool ok = srv_buf_ok(&tb) && write_all(fd, h, KV_FIXED) && write_all(fd, kv->model_id, mlen) &&
              write_all(fd, tb.data, tb.len) && write_all(fd, payload, payload_bytes) &&
              write_all(fd, trailer, trailer_bytes) && write_all(fd, sum, 32) && fsync(fd) == 0;
    srv_buf_free(&tb);
    if (close(fd) != 0) ok = false;
    if (!ok || rename(tmp, final) != 0) {
        st = ds4_seterr(err, DS4_ERR_IO, "kvstore: writing '%s' failed: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out_unlock;
    }
    int dfd = open(kv->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    if (!add_index(kv, &f)) { st = ds4_seterr(err, DS4_ERR_NOMEM, "kvstore: out of memory"); goto out_unlock; }
    if (kv->metrics) atomic_fetch_add(&kv->metrics->disk_writes, 1);
    evict(kv, f.name);
out_unlock:
    pthread_mutex_unlock(&kv->mu);
    free(final);
    return st;
}

void srv_kv_entry_free(srv_kv_entry *e) {
    if (!e) return;
    free(e->tokens);
    free(e->payload);
    free(e->trailer);
    memset(e, 0, sizeof *e);
}

static bool read_exact(int fd, void *p, size_t n, uint64_t off) {
    char *c = p;
    while (n) {
        ssize_t r = pread(fd, c, n, (off_t)off);
        if (r <= 0) { if (r < 0 && errno == EINTR) continue; return false; }
        c += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return true;
}

/* Reads n bytes at off into dst and adds them to the running checksum. */
static bool read_hashed(int fd, EVP_MD_CTX *c, void *dst, uint64_t n, uint64_t off) {
    return read_exact(fd, dst, (size_t)n, off) && EVP_DigestUpdate(c, dst, (size_t)n) == 1;
}

/* Loads and fully verifies file i for tokens[0..n_tokens). Each region is read straight into
 * its final buffer while the checksum runs, so a multi-GB snapshot is held once, not twice. */
static bool load_file(srv_kvstore *kv, size_t i, const int32_t *tokens, srv_kv_entry *out) {
    kv_file *f = &kv->files[i];
    char *path = path_of(kv, f->name);
    int fd = path ? open(path, O_RDWR | O_CLOEXEC) : -1;
    free(path);
    if (fd < 0) return false;
    struct stat sb;
    kv_file hdr = {0};
    uint64_t p = 0, t = 0;
    bool ok = fstat(fd, &sb) == 0 && read_header(kv, fd, (uint64_t)sb.st_size, &hdr, &p, &t) && hdr.n_tokens == f->n_tokens;
    size_t mlen = strlen(kv->model_id);
    uint64_t off = KV_FIXED + mlen, n = f->n_tokens;
    unsigned char head[KV_FIXED - 32 + KV_MAX_MODEL_ID];
    unsigned char *tokb = ok ? malloc((size_t)n * 4) : NULL;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    ok = ok && tokb && c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;
    if (ok) {
        out->payload = malloc(p ? (size_t)p : 1);
        out->trailer = malloc(t ? (size_t)t : 1);
        ok = out->payload && out->trailer && read_hashed(fd, c, head, KV_FIXED - 32 + mlen, 32) &&
             read_hashed(fd, c, tokb, n * 4, off);
    }
    for (uint64_t k = 0; ok && k < n; k++) ok = (int32_t)rd32(tokb + 4 * k) == tokens[k];
    ok = ok && read_hashed(fd, c, out->payload, p, off + n * 4) && read_hashed(fd, c, out->trailer, t, off + n * 4 + p);
    unsigned char sum[32], want[32];
    unsigned int sl = 0;
    ok = ok && EVP_DigestFinal_ex(c, sum, &sl) == 1 && read_exact(fd, want, 32, (uint64_t)sb.st_size - KV_SUM) &&
         memcmp(sum, want, 32) == 0;
    if (ok) {
        out->tokens = malloc((size_t)n * sizeof *out->tokens);
        ok = out->tokens != NULL;
        if (ok) memcpy(out->tokens, tokens, (size_t)n * sizeof *out->tokens);
        out->n_tokens = (size_t)n;
        out->payload_bytes = (size_t)p;
        out->trailer_bytes = (size_t)t;
    }
    if (ok) {
        unsigned char m[12];
        f->hits++;
        f->last_used = (uint64_t)time(NULL);
        wr64(m, f->last_used);
        wr32(m + 8, f->hits);
        if (pwrite(fd, m, sizeof m, 16) != (ssize_t)sizeof m) { /* metadata only; the entry stays valid */ }
    }
    EVP_MD_CTX_free(c);
    free(tokb);
    close(fd);
    if (!ok) srv_kv_entry_free(out);
    return ok;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

bool srv_kv_lookup(srv_kvstore *kv, const int32_t *tokens, size_t n, size_t min_tokens, srv_kv_entry *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&kv->mu);
    bool found = false;
    /* Candidate lengths are the token counts on disk. One SHA-256 pass over the request's
     * tokens yields the key of every candidate prefix (a copy of the running state is finished
     * at each length), so a lookup costs O(prompt) hashing however many files there are. */
    size_t nc = 0;
    uint64_t *lens = kv->n_files ? malloc(kv->n_files * sizeof *lens) : NULL;
    char (*names)[65] = kv->n_files ? malloc(kv->n_files * sizeof *names) : NULL;
    for (size_t i = 0; lens && names && i < kv->n_files; i++)
        if (kv->files[i].n_tokens <= n && kv->files[i].n_tokens >= min_tokens && kv->files[i].n_tokens > 0)
            lens[nc++] = kv->files[i].n_tokens;
    if (nc) qsort(lens, nc, sizeof *lens, cmp_u64);
    size_t nu = 0;
    for (size_t c = 0; c < nc; c++)
        if (nu == 0 || lens[nu - 1] != lens[c]) lens[nu++] = lens[c];
    EVP_MD_CTX *run = nu ? EVP_MD_CTX_new() : NULL, *fin = nu ? EVP_MD_CTX_new() : NULL;
    bool hashed = run && fin && EVP_DigestInit_ex(run, EVP_sha256(), NULL);
    uint64_t at = 0;
    for (size_t c = 0; hashed && c < nu; c++) {
        hash_tokens(run, tokens + at, (size_t)(lens[c] - at));
        at = lens[c];
        unsigned char d[32];
        unsigned int dl = 0;
        hashed = EVP_MD_CTX_copy_ex(fin, run) && EVP_DigestFinal_ex(fin, d, &dl);
        hexify(d, 32, names[c]);
    }
    for (size_t c = nu; hashed && c-- > 0 && !found;) {
        for (size_t i = 0; i < kv->n_files; i++) {
            if (strcmp(kv->files[i].name, names[c]) != 0) continue;
            if (load_file(kv, i, tokens, out)) found = true;
            else remove_file(kv, i, false); /* invariant 2 */
            break;
        }
    }
    EVP_MD_CTX_free(run);
    EVP_MD_CTX_free(fin);
    free(lens);
    free(names);
    if (kv->metrics) atomic_fetch_add(found ? &kv->metrics->disk_hits : &kv->metrics->disk_misses, 1);
    pthread_mutex_unlock(&kv->mu);
    return found;
}

size_t srv_kv_each_trailer(srv_kvstore *kv, void (*fn)(void *ud, const unsigned char *t, size_t n), void *ud) {
    pthread_mutex_lock(&kv->mu);
    size_t done = 0;
    for (size_t i = 0; i < kv->n_files; i++) {
        char *path = path_of(kv, kv->files[i].name);
        int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        free(path);
        if (fd < 0) continue;
        struct stat sb;
        kv_file hdr = {0};
        uint64_t p = 0, t = 0;
        /* Trailers are capped like the tool memory itself (512 MiB); the checksum is checked
         * when the file is used, here only the bounds matter. */
        if (fstat(fd, &sb) == 0 && read_header(kv, fd, (uint64_t)sb.st_size, &hdr, &p, &t) && t > 0 && t <= (512u << 20)) {
            unsigned char *buf = malloc(t);
            uint64_t off = (uint64_t)sb.st_size - KV_SUM - t;
            if (buf && read_exact(fd, buf, t, off)) { fn(ud, buf, t); done++; }
            free(buf);
        }
        close(fd);
    }
    pthread_mutex_unlock(&kv->mu);
    return done;
}

size_t srv_kv_count(srv_kvstore *kv) {
    pthread_mutex_lock(&kv->mu);
    size_t n = kv->n_files;
    pthread_mutex_unlock(&kv->mu);
    return n;
}

uint64_t srv_kv_bytes(srv_kvstore *kv) {
    pthread_mutex_lock(&kv->mu);
    uint64_t b = 0;
    for (size_t i = 0; i < kv->n_files; i++) b += kv->files[i].bytes;
    pthread_mutex_unlock(&kv->mu);
    return b;
}
