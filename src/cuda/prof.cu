/*
 * cuda/prof.cu — per-op timing of a launch sequence with CUDA events (issue #7: the per-kernel
 * breakdown of a decode step). The caller marks after each op with a tag (forward_cuda.c uses
 * its source line); collect() waits for the device and hands each tag the time between its
 * mark and the previous one. Marks are recorded on cu_stream; use it op by op, not while a graph
 * is captured. A gate (cuda_prof_gate_hold / _release) holds the stream until the host has
 * queued a run of ops, so their events measure GPU time back to back, not launch gaps.
 * Must not: know about the model.
 */
#include "common.cuh"
#include "cuda_api.h"

#include <stdlib.h>

struct cuda_prof {
    cudaEvent_t *ev;
    int *tag;
    int n, cap;
    volatile int *h_flag; /* host-mapped release counter of the gates (cuda_prof_gate_hold) */
    int *d_flag;          /* its device address */
    int seq;              /* gates queued so far; gate k runs once *flag >= k */
};

/* The gate: one thread spins on a host-mapped counter so that the ops queued behind gate k
 * start only when the host has enqueued all of them (and released k), then run back to back.
 * The counter only grows: a host running ahead never closes a gate the device has yet to pass
 * (a flag reset to 0 could, and with a full launch queue that is a deadlock). Bounded by ~2 s
 * of device time (globaltimer) so a host that never releases cannot hang the device. */
__global__ void k_prof_gate(const volatile int *flag, int k) {
    cu_pdl_wait();
    uint64_t t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        if (*flag - k >= 0) return;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < 2000000000ull);
}

extern "C" ds4_status cuda_prof_create(cuda_prof **out, int cap, ds4_error *err) {
    *out = NULL;
    if (cap < 2 || cap > 1 << 20)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_prof_create: %d marks", cap);
    cuda_prof *p = (cuda_prof *)calloc(1, sizeof *p);
    if (p) p->ev = (cudaEvent_t *)calloc((size_t)cap, sizeof *p->ev);
    if (p && p->ev) p->tag = (int *)calloc((size_t)cap, sizeof *p->tag);
    if (!p || !p->ev || !p->tag) {
        if (p) free(p->ev);
        free(p);
        return ds4_seterr(err, DS4_ERR_NOMEM, "cuda_prof_create: out of host memory");
    }
    for (int i = 0; i < cap; i++) {
        cudaError_t e = cudaEventCreate(&p->ev[i]);
        if (e != cudaSuccess) {
            p->cap = i;
            cuda_prof_free(p);
            return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: event create: %s", cudaGetErrorString(e));
        }
    }
    p->cap = cap;
    *out = p;
    return DS4_OK;
}

extern "C" void cuda_prof_mark(cuda_prof *p, int tag) {
    if (!p || p->n >= p->cap) return; /* full: later marks are dropped (collect says so) */
    if (cudaEventRecord(p->ev[p->n], cu_stream) != cudaSuccess) {
        cudaGetLastError();
        return;
    }
    p->tag[p->n++] = tag;
}

extern "C" ds4_status cuda_prof_gate_hold(cuda_prof *p, ds4_error *err) {
    if (!p) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda_prof_gate_hold: no profile");
    if (!p->h_flag) {
        void *h = NULL, *d = NULL;
        CU_CHECK(cudaHostAlloc(&h, sizeof(int), cudaHostAllocMapped), err, "profile gate flag");
        cudaError_t e = cudaHostGetDevicePointer(&d, h, 0);
        if (e != cudaSuccess) {
            cudaFreeHost(h);
            return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: profile gate flag: %s", cudaGetErrorString(e));
        }
        p->h_flag = (volatile int *)h;
        p->d_flag = (int *)d;
        *p->h_flag = p->seq = 0;
    }
    cu_launch(k_prof_gate, 1, 1, 0, p->d_flag, ++p->seq);
    CU_CHECK(cudaGetLastError(), err, "profile gate launch");
    cuda_prof_mark(p, -1); /* the time before it (the wait) belongs to no op */
    return DS4_OK;
}

extern "C" void cuda_prof_gate_release(cuda_prof *p) {
    if (!p || !p->h_flag) return;
    __sync_synchronize();
    *p->h_flag = p->seq;
}

extern "C" ds4_status cuda_prof_collect(cuda_prof *p, void (*fn)(void *user, int tag, float ms),
                                        void *user, ds4_error *err) {
    if (!p || p->n == 0) return DS4_OK;
    CU_CHECK(cudaEventSynchronize(p->ev[p->n - 1]), err, "profile sync");
    for (int i = 1; i < p->n; i++) {
        float ms = 0.0f;
        CU_CHECK(cudaEventElapsedTime(&ms, p->ev[i - 1], p->ev[i]), err, "profile elapsed");
        if (p->tag[i] >= 0) fn(user, p->tag[i], ms);
    }
    int full = p->n >= p->cap;
    p->n = 0;
    if (full) return ds4_seterr(err, DS4_ERR_RANGE, "cuda profile: more marks than %d", p->cap);
    return DS4_OK;
}

extern "C" void cuda_prof_free(cuda_prof *p) {
    if (!p) return;
    for (int i = 0; i < p->cap; i++) cudaEventDestroy(p->ev[i]);
    if (p->h_flag) cudaFreeHost((void *)p->h_flag);
    free(p->ev);
    free(p->tag);
    free(p);
}
