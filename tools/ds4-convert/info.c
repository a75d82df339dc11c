/*
 * tools/ds4-convert/info.c — `ds4-convert --info FILE.gguf`: every metadata record (arrays
 * abbreviated to their first elements) and the tensor table (name, type, dims, bytes, offset),
 * read with format/gguf.h. Prints only; never modifies the file.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "format/gguf.h"
#include "format/types.h"
#include "tool.h"

#define ARRAY_SHOWN 8

static void print_str(gguf_str s, uint64_t max) {
    putchar('"');
    for (uint64_t i = 0; i < s.len && i < max; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c < 0x20) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
    if (s.len > max) printf("... (%" PRIu64 " bytes)", s.len);
}

static void print_scalar(const gguf_value *v) {
    ds4_error e;
    uint64_t u;
    int64_t i;
    double d;
    bool b;
    gguf_str s;
    switch (v->type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_UINT32: case GGUF_TYPE_UINT64:
        if (v->type == GGUF_TYPE_UINT8) u = v->raw[0];
        else if (v->type == GGUF_TYPE_UINT16) { uint16_t x; memcpy(&x, v->raw, 2); u = x; }
        else if (v->type == GGUF_TYPE_UINT32) { uint32_t x; memcpy(&x, v->raw, 4); u = x; }
        else memcpy(&u, v->raw, 8);
        printf("%" PRIu64, u);
        break;
    case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: case GGUF_TYPE_INT64:
        if (v->type == GGUF_TYPE_INT8) i = (int8_t)v->raw[0];
        else if (v->type == GGUF_TYPE_INT16) { int16_t x; memcpy(&x, v->raw, 2); i = x; }
        else if (v->type == GGUF_TYPE_INT32) { int32_t x; memcpy(&x, v->raw, 4); i = x; }
        else memcpy(&i, v->raw, 8);
        printf("%" PRId64, i);
        break;
    case GGUF_TYPE_FLOAT32: case GGUF_TYPE_FLOAT64:
        if (gguf_value_f64(v, &d, &e) == DS4_OK) printf("%.9g", d);
        break;
    case GGUF_TYPE_BOOL:
        if (gguf_value_bool(v, &b, &e) == DS4_OK) printf("%s", b ? "true" : "false");
        break;
    case GGUF_TYPE_STRING:
        if (gguf_value_str(v, &s, &e) == DS4_OK) print_str(s, 80);
        break;
    default:
        printf("?");
    }
}

static void print_value(const gguf_value *v) {
    if (v->type != GGUF_TYPE_ARRAY) {
        print_scalar(v);
        return;
    }
    printf("%s[%" PRIu64 "] [", gguf_vtype_name(v->elem_type), v->n_elems);
    ds4_error e;
    for (uint64_t i = 0; i < v->n_elems && i < ARRAY_SHOWN; i++) {
        gguf_value el;
        if (gguf_arr_elem(v, i, &el, &e) != DS4_OK) break;
        printf("%s", i ? ", " : "");
        if (el.type == GGUF_TYPE_ARRAY) printf("[...]");
        else if (el.type == GGUF_TYPE_STRING) {
            gguf_str s;
            if (gguf_value_str(&el, &s, &e) == DS4_OK) print_str(s, 24);
        } else print_scalar(&el);
    }
    printf("%s]", v->n_elems > ARRAY_SHOWN ? ", ..." : "");
}

int cvt_info(const char *path) {
    gguf_ctx *g;
    ds4_error err;
    if (gguf_open(&g, path, &err) != DS4_OK) {
        fprintf(stderr, "ds4-convert: %s\n", err.msg);
        return 1;
    }
    printf("%s: GGUF v%u, %" PRIu64 " bytes, alignment %u, data at %" PRIu64 "\n", path,
           gguf_version(g), gguf_file_bytes(g), gguf_alignment(g), gguf_data_offset(g));
    printf("\nmetadata (%" PRIu64 " records):\n", gguf_n_kv(g));
    for (uint64_t i = 0; i < gguf_n_kv(g); i++) {
        const gguf_value *v = gguf_kv_value(g, i);
        printf("  %-48s %-8s ", gguf_kv_key(g, i), gguf_vtype_name(v->type));
        print_value(v);
        putchar('\n');
    }
    printf("\ntensors (%" PRIu64 "):\n", gguf_n_tensors(g));
    printf("  %-44s %-8s %-24s %14s %14s\n", "name", "type", "dims", "bytes", "offset");
    for (uint64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char dims[96];
        int o = snprintf(dims, sizeof dims, "[%" PRIu64, t->ne[0]);
        for (uint32_t d = 1; d < t->n_dims && o < (int)sizeof dims; d++)
            o += snprintf(dims + o, sizeof dims - (size_t)o, ", %" PRIu64, t->ne[d]);
        if (o < (int)sizeof dims) snprintf(dims + o, sizeof dims - (size_t)o, "]");
        printf("  %-44s %-8s %-24s %14" PRIu64 " %14" PRIu64 "\n", t->name, ds4_type_name(t->type),
               dims, t->n_bytes, t->offset);
    }
    gguf_close(g);
    return 0;
}
