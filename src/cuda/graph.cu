/*
 * cuda/graph.cu — CUDA graph capture of a sequence of op-table calls (issue #7: the decode step
 * as one graph launch instead of ~40 launches per layer). While a capture is open every op
 * launches on the capture stream (cu_stream, common.cuh); the finished capture updates the
 * executable graph in place (cudaGraphExecUpdate: same topology, new kernel arguments such as
 * the position) or is instantiated afresh when the topology changed.
 * Must not: know about the model or run kernels of its own. One capture at a time per process.
 */
#include "common.cuh"
#include "cuda_api.h"

#include <stdlib.h>

struct cuda_graph {
    cudaGraphExec_t exec;
    long n_inst, n_upd;
};

static cudaStream_t g_capture; /* created on first use; blocking, so legacy-stream copies order with it */

extern "C" ds4_status cuda_graph_begin(ds4_error *err) {
    if (cu_stream) return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda graph: a capture is already open");
    if (!g_capture) CU_CHECK(cudaStreamCreate(&g_capture), err, "graph stream");
    CU_CHECK(cudaStreamBeginCapture(g_capture, cudaStreamCaptureModeThreadLocal), err,
             "graph capture begin");
    cu_stream = g_capture;
    return DS4_OK;
}

extern "C" void cuda_graph_abort(void) {
    if (!cu_stream) return;
    cudaGraph_t gr = NULL;
    cudaStreamEndCapture(cu_stream, &gr);
    if (gr) cudaGraphDestroy(gr);
    cudaGetLastError(); /* an invalidated capture leaves its error; the caller already has one */
    cu_stream = 0;
}

extern "C" ds4_status cuda_graph_end(cuda_graph **g, ds4_error *err) {
    if (!cu_stream) return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda graph: no capture is open");
    cudaGraph_t gr = NULL;
    cudaError_t e = cudaStreamEndCapture(cu_stream, &gr);
    cu_stream = 0;
    if (e != cudaSuccess) {
        if (gr) cudaGraphDestroy(gr);
        return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: graph capture end: %s", cudaGetErrorString(e));
    }
    if (!*g) {
        *g = (cuda_graph *)calloc(1, sizeof **g);
        if (!*g) {
            cudaGraphDestroy(gr);
            return ds4_seterr(err, DS4_ERR_NOMEM, "cuda graph: out of host memory");
        }
    }
    cuda_graph *x = *g;
    if (x->exec) {
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(x->exec, gr, &info) == cudaSuccess) {
            x->n_upd++;
            cudaGraphDestroy(gr);
            return DS4_OK;
        }
        cudaGetLastError();
        cudaGraphExecDestroy(x->exec);
        x->exec = NULL;
    }
    e = cudaGraphInstantiate(&x->exec, gr, 0);
    cudaGraphDestroy(gr);
    if (e != cudaSuccess) {
        x->exec = NULL;
        return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda: graph instantiate: %s", cudaGetErrorString(e));
    }
    x->n_inst++;
    return DS4_OK;
}

extern "C" ds4_status cuda_graph_launch(cuda_graph *g, ds4_error *err) {
    if (!g || !g->exec) return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda graph: nothing captured");
    if (!g_capture) return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda graph: no stream");
    CU_CHECK(cudaGraphLaunch(g->exec, g_capture), err, "graph launch");
    return DS4_OK;
}

extern "C" void cuda_graph_counts(const cuda_graph *g, long *n_inst, long *n_upd) {
    *n_inst = g ? g->n_inst : 0;
    *n_upd = g ? g->n_upd : 0;
}

extern "C" void cuda_graph_free(cuda_graph *g) {
    if (!g) return;
    if (g->exec) cudaGraphExecDestroy(g->exec);
    free(g);
}
