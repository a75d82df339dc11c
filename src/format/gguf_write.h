/*
 * format/gguf_write.h — streaming GGUF v3 writer (GGUF_LAYOUT §1, §5.4). Holds metadata and the
 * tensor directory in memory, never tensor data: the converter writes 80-150 GB files on a
 * 128 GB machine. Knows nothing about DeepSeek or quantization.
 *
 * Sequence (each step checks it comes in order, else DS4_ERR_STATE):
 *   gguf_writer_create(&w, path)        opens "<path>.tmp.<pid>"
 *   gguf_writer_add_*(w, key, ...)      metadata records, in file order; keys unique
 *   gguf_writer_add_tensor(w, ...)      every tensor info, in file (= data) order
 *   gguf_writer_write_header(w)         header + records + directory + zero padding
 *   gguf_writer_write(w, bytes, n) ...  tensor data in directory order, any chunking; a chunk
 *                                       may not run past the current tensor (DS4_ERR_RANGE
 *                                       naming it); a tensor's last byte pads to alignment
 *                                       and moves on to the next tensor
 *   gguf_writer_finish(w)               checks every tensor got exactly its bytes, flushes,
 *                                       fsyncs, closes and renames the temp file to `path`
 *   gguf_writer_free(w)                 always; removes the temp file if finish did not succeed
 *
 * Layout: alignment is 32 unless a UINT32 "general.alignment" record is added (it must be a
 * non-zero power of two, and must come before the first add_tensor). Each tensor's offset is
 * the previous tensor's end rounded up to the alignment; data_start is the end of the
 * directory rounded up (GGUF_LAYOUT §1.4). All padding is zero bytes.
 *
 * Validation mirrors the reader so a written file always reads back: keys and tensor names
 * non-empty valid UTF-8 without NUL, unique; tensor types known, n_dims 1..DS4_MAX_DIMS,
 * ne >= 1, ne0 a multiple of the block size. Errors name the path and the key or tensor.
 * Codes: a caller mistake (bad or duplicate name, bad shape, bad alignment value) is
 * DS4_ERR_INVALID_ARG, an unknown tensor type DS4_ERR_UNSUPPORTED, a malformed raw encoding
 * DS4_ERR_FORMAT, a call out of sequence or an incomplete tensor at finish DS4_ERR_STATE, a
 * chunk past the current tensor DS4_ERR_RANGE, a failed write/fsync/rename DS4_ERR_IO.
 */
#ifndef DS4_FORMAT_GGUF_WRITE_H
#define DS4_FORMAT_GGUF_WRITE_H

#include <stdbool.h>
#include <stdint.h>
#include "ds4.h"
#include "format/gguf.h"

typedef struct gguf_writer gguf_writer;

/* File writer: data goes to "<path>.tmp.<pid>" and becomes `path` only on finish. */
ds4_status gguf_writer_create(gguf_writer **out, const char *path, ds4_error *err);
/* Memory writer (tests): the file bytes accumulate in a buffer; get it with
 * gguf_writer_mem_data after finish. */
ds4_status gguf_writer_create_mem(gguf_writer **out, ds4_error *err);
/* Frees the writer; if finish has not succeeded, closes and removes the temp file. NULL ok. */
void gguf_writer_free(gguf_writer *w);

/* ---- Metadata -------------------------------------------------------------------------- */
ds4_status gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v, ds4_error *err);
ds4_status gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v, ds4_error *err);
ds4_status gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v, ds4_error *err);
ds4_status gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v, ds4_error *err);
ds4_status gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v, ds4_error *err);
ds4_status gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v, ds4_error *err);
ds4_status gguf_writer_add_f32(gguf_writer *w, const char *key, float v, ds4_error *err);
ds4_status gguf_writer_add_bool(gguf_writer *w, const char *key, bool v, ds4_error *err);
ds4_status gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v, ds4_error *err);
ds4_status gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v, ds4_error *err);
ds4_status gguf_writer_add_f64(gguf_writer *w, const char *key, double v, ds4_error *err);
/* NUL-terminated string; the _n form takes an explicit length (may contain any bytes). */
ds4_status gguf_writer_add_str(gguf_writer *w, const char *key, const char *s, ds4_error *err);
ds4_status gguf_writer_add_strn(gguf_writer *w, const char *key, const char *s, uint64_t len,
                                ds4_error *err);
/* Array of n fixed-size numbers (elem_type UINT8..FLOAT64 except STRING/ARRAY), given packed in
 * host order (e.g. a uint32_t[] for UINT32, a bool/uint8_t[] for BOOL); n may be 0. */
ds4_status gguf_writer_add_arr(gguf_writer *w, const char *key, uint32_t elem_type,
                               const void *data, uint64_t n, ds4_error *err);
/* Array of n NUL-terminated strings (n may be 0). */
ds4_status gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                   uint64_t n, ds4_error *err);
/* Array of n strings given as (ptr,len) views. */
ds4_status gguf_writer_add_arr_strv(gguf_writer *w, const char *key, const gguf_str *strs,
                                    uint64_t n, ds4_error *err);
/* Any value given in its GGUF encoding (what follows the type id in a record; for ARRAY the
 * element type, count and elements): nested arrays, or a verbatim copy of a value read from
 * another file (pass v->type, v->raw, v->raw_bytes). The encoding is validated like the reader
 * does (DS4_ERR_FORMAT naming the key). */
ds4_status gguf_writer_add_raw(gguf_writer *w, const char *key, uint32_t type,
                               const void *encoded, uint64_t n_bytes, ds4_error *err);
/* Copies a value read by format/gguf.h (any type). */
ds4_status gguf_writer_add_value(gguf_writer *w, const char *key, const gguf_value *v,
                                 ds4_error *err);

/* ---- Tensor directory ------------------------------------------------------------------- */
/* Appends a tensor info: ne[0..n_dims-1], ne0 first. Its offset is computed here. */
ds4_status gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t type,
                                  uint32_t n_dims, const uint64_t *ne, ds4_error *err);
uint64_t gguf_writer_n_tensors(const gguf_writer *w);
/* Byte size and offset (relative to the data region) of tensor i, as they will be written;
 * DS4_ERR_RANGE for a bad index. */
ds4_status gguf_writer_tensor_layout(const gguf_writer *w, uint64_t i, uint64_t *n_bytes,
                                     uint64_t *offset, ds4_error *err);
/* Size of the whole file given the records and tensors added so far (header + directory +
 * padding + data), e.g. to print before converting. */
ds4_status gguf_writer_total_bytes(const gguf_writer *w, uint64_t *out, ds4_error *err);

/* ---- Writing ------------------------------------------------------------------------------ */
/* Writes header, metadata, directory and padding. No add_* call is allowed afterwards. */
ds4_status gguf_writer_write_header(gguf_writer *w, ds4_error *err);
/* Streams tensor bytes in directory order (see the sequence above). */
ds4_status gguf_writer_write(gguf_writer *w, const void *data, uint64_t n_bytes, ds4_error *err);
/* Convenience: all bytes of the next tensor at once; `name` must be that tensor and n_bytes its
 * size, else DS4_ERR_STATE / DS4_ERR_RANGE naming both. */
ds4_status gguf_writer_write_tensor(gguf_writer *w, const char *name, const void *data,
                                    uint64_t n_bytes, ds4_error *err);
/* Index of the tensor the next gguf_writer_write bytes go to (== n_tensors when all done). */
uint64_t gguf_writer_current_tensor(const gguf_writer *w);
/* Bytes the current tensor still needs. */
uint64_t gguf_writer_current_remaining(const gguf_writer *w);

/* Checks completeness, flushes, fsyncs, closes and renames into place. On failure the temp
 * file is removed (the final name is never left half written). Call gguf_writer_free after. */
ds4_status gguf_writer_finish(gguf_writer *w, ds4_error *err);

/* Memory writer only, after a successful finish: the file bytes, owned by the writer until
 * gguf_writer_free. DS4_ERR_STATE otherwise. */
ds4_status gguf_writer_mem_data(const gguf_writer *w, const uint8_t **data, uint64_t *n_bytes,
                                ds4_error *err);

#endif
