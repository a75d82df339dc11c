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
static cudaStream_t g_lane[CUDA_GRAPH_LANES]; /* side streams of the branches, non-blocking */
static cudaEvent_t g_ev;  /* fork/join points: each record is consumed by the wait right after it */
static bool g_open;       /* a capture is open (cu_stream is then g_capture or a lane) */
static int g_prio;        /* the main stream's launch priority (cu_prio), 0 with DS4_CUDA_BRANCH_PRIO=0 */

extern "C" ds4_status cuda_graph_begin(ds4_error *err) {
    if (g_open) return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda graph: a capture is already open");
    if (!g_capture) CU_CHECK(cudaStreamCreate(&g_capture), err, "graph stream");
    /* created here, outside the capture, so that a fork never creates anything mid-capture */
    for (int i = 0; i < CUDA_GRAPH_LANES; i++)
        if (!g_lane[i]) CU_CHECK(cudaStreamCreateWithFlags(&g_lane[i], cudaStreamNonBlocking), err, "lane stream");
    if (!g_ev) CU_CHECK(cudaEventCreateWithFlags(&g_ev, cudaEventDisableTiming), err, "lane event");
    int least = 0, greatest = 0;
    CU_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest), err, "stream priorities");
    const char *pe = getenv("DS4_CUDA_BRANCH_PRIO");
    g_prio = pe && pe[0] == '0' ? 0 : greatest;
    CU_CHECK(cudaStreamBeginCapture(g_capture, cudaStreamCaptureModeThreadLocal), err,
             "graph capture begin");
    cu_stream = g_capture;
    cu_prio = g_prio;
    g_open = true;
    return DS4_OK;
}

/* A lane's stream joins the capture by waiting on an event recorded on a capturing stream: its
 * launches then depend on everything recorded on `from` before the fork. */
static cudaError_t wait_on(cudaStream_t waiter, cudaStream_t from) {
    cudaError_t e = cudaEventRecord(g_ev, from);
    return e == cudaSuccess ? cudaStreamWaitEvent(waiter, g_ev, 0) : e;
}

static ds4_status lane_check(int lane, ds4_error *err) {
    if (!g_open) return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda graph: no capture is open");
    if (lane < 1 || lane > CUDA_GRAPH_LANES)
        return ds4_seterr(err, DS4_ERR_INVALID_ARG, "cuda graph: lane %d (1..%d)", lane, CUDA_GRAPH_LANES);
    return DS4_OK;
}

extern "C" ds4_status cuda_graph_fork(int lane, ds4_error *err) {
    ds4_status st = lane_check(lane, err);
    if (st) return st;
    CU_CHECK(wait_on(g_lane[lane - 1], g_capture), err, "graph fork");
    cu_stream = g_lane[lane - 1];
    cu_prio = 0;
    return DS4_OK;
}

extern "C" void cuda_graph_main(void) {
    if (!g_open) return;
    cu_stream = g_capture;
    cu_prio = g_prio;
}

extern "C" ds4_status cuda_graph_join(int lane, ds4_error *err) {
    ds4_status st = lane_check(lane, err);
    if (st) return st;
    cuda_graph_main();
    CU_CHECK(wait_on(g_capture, g_lane[lane - 1]), err, "graph join");
    return DS4_OK;
}

extern "C" void cuda_graph_abort(void) {
    if (!g_open) return;
    cudaGraph_t gr = NULL;
    cudaStreamEndCapture(g_capture, &gr);
    if (gr) cudaGraphDestroy(gr);
    cudaGetLastError(); /* an invalidated capture leaves its error; the caller already has one */
    cu_stream = 0;
    cu_prio = 0;
    g_open = false;
}

extern "C" ds4_status cuda_graph_end(cuda_graph **g, ds4_error *err) {
    if (!g_open) return ds4_seterr(err, DS4_ERR_INTERNAL, "cuda graph: no capture is open");
    cudaGraph_t gr = NULL;
    /* a lane not joined back fails the capture here (cudaErrorStreamCaptureUnjoined) */
    cudaError_t e = cudaStreamEndCapture(g_capture, &gr);
    cu_stream = 0;
    cu_prio = 0;
    g_open = false;
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
    /* the kernels' priorities (cu_prio) count only with this flag */
    e = cudaGraphInstantiate(&x->exec, gr, cudaGraphInstantiateFlagUseNodePriority);
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
