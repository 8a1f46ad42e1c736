/*
 * Fused CPU kernels for the fake-quantization hot path (see functional.py).
 *
 * Why C: torch runs the ULQ forward as four elementwise passes and its backward as one
 * pass plus five reductions, each a separate kernel launch that re-reads the tensors.
 * On a CPU the QAT step is memory-bound on those passes; one fused pass each way makes
 * fake quantization cost a fraction of the convolutions around it.
 *
 * The arithmetic is exactly torch's: x / scale (IEEE division), round half to even,
 * clamp, times scale. The module works on raw float32 pointers handed over from
 * Python (contiguous CPU tensors), releases the GIL and splits large tensors over
 * `threads` POSIX threads, like torch's own intra-op parallelism.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#define MAX_THREADS 64
#define MIN_PER_THREAD 262144
#define BLOCK 4096

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

typedef struct {
    const float *g, *x, *y;
    float *out;
    int64_t n;
    float scale, lo, hi;
    double err, above, below;
} Span;

HOT static void ulq_forward_span(Span *s) {
    const float *x = s->x;
    float *y = s->out;
    const float scale = s->scale, lo = s->lo, hi = s->hi;
    for (int64_t i = 0; i < s->n; i++) {
        float v = nearbyintf(x[i] / scale);
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        y[i] = v * scale;
    }
}

/* grad_x = g inside (lo, hi), 0 outside (torch's hardtanh_backward), and three sums:
 * sum over in-range of g * (y - x), and of g above and below the range. */
HOT static void ulq_backward_span(Span *s) {
    const float *g = s->g, *x = s->x, *y = s->y;
    float *gx = s->out;
    const float lo = s->lo, hi = s->hi;
    double err = 0.0, above = 0.0, below = 0.0;
    for (int64_t start = 0; start < s->n; start += BLOCK) {
        int64_t end = start + BLOCK < s->n ? start + BLOCK : s->n;
        float e = 0.0f, a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : e, a, b)
        for (int64_t i = start; i < end; i++) {
            float gi = g[i], xi = x[i];
            float inside = (xi <= lo || xi >= hi) ? 0.0f : gi;
            gx[i] = inside;
            e += inside * (y[i] - xi);
            a += xi >= hi ? gi : 0.0f;
            b += xi <= lo ? gi : 0.0f;
        }
        err += e;
        above += a;
        below += b;
    }
    s->err = err;
    s->above = above;
    s->below = below;
}

static void *run_forward(void *arg) {
    ulq_forward_span((Span *)arg);
    return NULL;
}

static void *run_backward(void *arg) {
    ulq_backward_span((Span *)arg);
    return NULL;
}

/* Split [0, n) into up to `threads` spans; the calling thread takes the first. */
static void parallel(Span *base, int threads, void *(*fn)(void *), Span *spans, int *count) {
    int64_t n = base->n;
    int k = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    if (n / k < MIN_PER_THREAD) {
        k = (int)(n / MIN_PER_THREAD);
        k = k < 1 ? 1 : k;
    }
    int64_t chunk = (n + k - 1) / k;
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 0; t < k; t++) {
        int64_t begin = t * chunk, end = begin + chunk < n ? begin + chunk : n;
        spans[t] = *base;
        spans[t].n = end > begin ? end - begin : 0;
        spans[t].g = base->g ? base->g + begin : NULL;
        spans[t].x = base->x + begin;
        spans[t].y = base->y ? base->y + begin : NULL;
        spans[t].out = base->out + begin;
        if (t > 0 && pthread_create(&ids[t], NULL, fn, &spans[t]) == 0)
            started[t] = 1;
    }
    fn(&spans[0]);
    for (int t = 1; t < k; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            fn(&spans[t]);
    }
    *count = k;
}

static PyObject *ulq_forward(PyObject *self, PyObject *args) {
    unsigned long long x, y;
    Py_ssize_t n;
    float scale, lo, hi;
    int threads;
    if (!PyArg_ParseTuple(args, "KKnfffi", &x, &y, &n, &scale, &lo, &hi, &threads))
        return NULL;
    Span base = {NULL, (const float *)(uintptr_t)x, NULL, (float *)(uintptr_t)y, n, scale, lo, hi, 0, 0, 0};
    Span spans[MAX_THREADS];
    int count;
    Py_BEGIN_ALLOW_THREADS
    parallel(&base, threads, run_forward, spans, &count);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *ulq_backward(PyObject *self, PyObject *args) {
    unsigned long long g, x, y, gx;
    Py_ssize_t n;
    float lo, hi;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKKnffi", &g, &x, &y, &gx, &n, &lo, &hi, &threads))
        return NULL;
    Span base = {(const float *)(uintptr_t)g, (const float *)(uintptr_t)x, (const float *)(uintptr_t)y,
                 (float *)(uintptr_t)gx, n, 1.0f, lo, hi, 0, 0, 0};
    Span spans[MAX_THREADS];
    int count;
    double err = 0.0, above = 0.0, below = 0.0;
    Py_BEGIN_ALLOW_THREADS
    parallel(&base, threads, run_backward, spans, &count);
    Py_END_ALLOW_THREADS
    for (int t = 0; t < count; t++) {
        err += spans[t].err;
        above += spans[t].above;
        below += spans[t].below;
    }
    return Py_BuildValue("ddd", err, above, below);
}

/* Symmetric per-channel fake quantization of a weight viewed as [outer, channels, inner], as AMCT
 * computes it: scale_c = max(max(w) / qmax, -min(w) / -qmin) over the channel (at least FLT_MIN), so
 * the whole grid [qmin, qmax] is used, then w -> round(w / scale_c) * scale_c. */
HOT static void arq_kernel(const float *w, float *out, int64_t outer, int64_t channels, int64_t inner, float qmin,
                           float qmax) {
    for (int64_t c = 0; c < channels; c++) {
        float high = 0.0f, low = 0.0f;
        for (int64_t o = 0; o < outer; o++) {
            const float *row = w + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i++) {
                float v = row[i];
                high = v > high ? v : high;
                low = v < low ? v : low;
            }
        }
        float up = high / qmax, down = low / qmin;
        float scale = up > down ? up : down;
        scale = scale < 1.17549435e-38f ? 1.17549435e-38f : scale;
        for (int64_t o = 0; o < outer; o++) {
            const float *row = w + (o * channels + c) * inner;
            float *dst = out + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i++) {
                float q = nearbyintf(row[i] / scale);
                q = q > qmax ? qmax : (q < qmin ? qmin : q);
                dst[i] = q * scale;
            }
        }
    }
}

static PyObject *arq_forward(PyObject *self, PyObject *args) {
    unsigned long long w, out;
    Py_ssize_t outer, channels, inner;
    float qmin, qmax;
    if (!PyArg_ParseTuple(args, "KKnnnff", &w, &out, &outer, &channels, &inner, &qmin, &qmax))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    arq_kernel((const float *)(uintptr_t)w, (float *)(uintptr_t)out, outer, channels, inner, qmin, qmax);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"ulq_forward", ulq_forward, METH_VARARGS, "ulq_forward(x, y, n, scale, lo, hi, threads)"},
    {"ulq_backward", ulq_backward, METH_VARARGS,
     "ulq_backward(g, x, y, grad_x, n, lo, hi, threads) -> (sum_in g*(y-x), sum_above g, sum_below g)"},
    {"arq_forward", arq_forward, METH_VARARGS, "arq_forward(w, out, outer, channels, inner, qmin, qmax)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cpu_kernels(void) { return PyModule_Create(&module); }
