/* The public inference API (cirrdata/model.h): a graph loaded from a safetensors file and run by
 * the plain C executor (nn/ref_ops.c) or the Vulkan one (nn/vk_exec.c). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cirrdata/model.h"
#include "nn/graph.h"
#include "nn/safetensors.h"
#include "nn/vk_exec.h"

#define MODEL_DEFAULT_ARENA (4ull << 30)

struct cd_model {
    pthread_mutex_t lock;
    cd_nn_graph *g;
    cd_model_device used;
    char device_name[640];
    int threads;
    uint64_t max_arena;
    bool shaped;          /* g is shaped for (n, h, w) below */
    int64_t n, h, w;
    float *arena;         /* CPU executor: cd_buffer_alloc of arena_bytes */
    size_t arena_bytes;
    cd_gpu_context *gpu;  /* Vulkan executor */
    cd_nn_vk *vk;
};

/* A trailing softmax turns logits into probabilities; the API returns the logits, so the graph
 * ends before it. */
static void drop_trailing_softmax(cd_nn_graph *g) {
    while (g->output == g->count - 1 && g->output > 0 && g->nodes[g->output].op == CD_NN_SOFTMAX) {
        g->output = g->nodes[g->output].in[0];
        g->count--;
        /* Nodes after the new output would only feed the removed softmax: none remain after
         * simplification (which keeps only what the output needs), but be exact anyway. */
        while (g->count - 1 > g->output) {
            cd_nn_node *nd = &g->nodes[--g->count];
            free(nd->weight);
            free(nd->bias);
            free(nd->bn_mean);
            free(nd->bn_var);
        }
    }
}

static cd_status open_vulkan(cd_model *m, const cd_model_options *o, bool automatic, cd_error *err) {
    cd_status st = cd_gpu_create(o->gpu, &m->gpu, err);
    if (st != CD_OK) return st;
    const cd_gpu_device_info *dev = cd_gpu_device(m->gpu);
    if (automatic && dev->type == CD_GPU_CPU) {
        /* A software Vulkan device (lavapipe) is slower than the C executor: auto keeps the CPU. */
        st = cd_fail(err, CD_ERR_UNSUPPORTED, "the Vulkan device '%s' is a CPU implementation", dev->name);
        cd_gpu_destroy(m->gpu);
        m->gpu = NULL;
        return st;
    }
    bool fp16_used = false;
    st = cd_nn_vk_create(m->gpu, m->g, o->fp16, &fp16_used, &m->vk, err);
    if (st != CD_OK) {
        cd_gpu_destroy(m->gpu);
        m->gpu = NULL;
        m->vk = NULL;
        return st;
    }
    m->used = CD_MODEL_VULKAN;
    snprintf(m->device_name, sizeof m->device_name, "vulkan: %s (%s)", dev->name, fp16_used ? "fp16" : "fp32");
    return CD_OK;
}

cd_status cd_model_open(const char *path, const cd_model_options *options, cd_model **out, cd_error *err) {
    if (!out) return cd_fail(err, CD_ERR_ARG, "cd_model_open: NULL output pointer");
    *out = NULL;
    if (!path) return cd_fail(err, CD_ERR_ARG, "cd_model_open: NULL path");
    cd_model_options o;
    memset(&o, 0, sizeof o);
    if (options) o = *options;
    if ((int)o.device < CD_MODEL_CPU || o.device > CD_MODEL_AUTO)
        return cd_fail(err, CD_ERR_ARG, "cd_model_open: %s: unknown device %d", path, (int)o.device);
    if (o.threads < 0 || o.threads > 1024)
        return cd_fail(err, CD_ERR_ARG, "cd_model_open: %s: threads %d is outside 0..1024", path, o.threads);

    cd_model *m = calloc(1, sizeof *m);
    if (!m) return cd_fail(err, CD_ERR_NOMEM, "%s: out of memory opening the model", path);
    m->threads = o.threads ? o.threads : cd_thread_count(0);
    m->max_arena = o.max_arena_bytes ? o.max_arena_bytes : MODEL_DEFAULT_ARENA;
    cd_st_file *f = NULL;
    cd_status st = cd_st_open(path, &f, err);
    if (st == CD_OK) st = cd_nn_graph_load(f, &m->g, err);
    cd_st_close(f); /* the graph holds its own copy of the parameters */
    if (st != CD_OK) {
        free(m);
        return st;
    }
    drop_trailing_softmax(m->g);
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        cd_nn_graph_free(m->g);
        free(m);
        return cd_fail(err, CD_ERR_INTERNAL, "%s: cannot create the model's lock", path);
    }

    m->used = CD_MODEL_CPU;
    snprintf(m->device_name, sizeof m->device_name, "cpu (%d thread%s)", m->threads, m->threads == 1 ? "" : "s");
    if (o.device == CD_MODEL_VULKAN) {
        if ((st = open_vulkan(m, &o, false, err)) != CD_OK) {
            cd_model_close(m);
            return st;
        }
    } else if (o.device == CD_MODEL_AUTO) {
        cd_error why;
        cd_error_clear(&why);
        if (open_vulkan(m, &o, true, &why) != CD_OK)
            snprintf(m->device_name, sizeof m->device_name, "cpu (%d thread%s; vulkan not used: %.500s)", m->threads,
                     m->threads == 1 ? "" : "s", why.message);
    }
    *out = m;
    return CD_OK;
}

void cd_model_close(cd_model *m) {
    if (!m) return;
    cd_nn_vk_destroy(m->vk);
    cd_gpu_destroy(m->gpu);
    cd_buffer_free(m->arena, m->arena_bytes);
    cd_nn_graph_free(m->g);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

const char *cd_model_arch(const cd_model *m) { return m ? m->g->arch : ""; }
int cd_model_classes(const cd_model *m) { return m ? m->g->classes : 0; }
int cd_model_in_channels(const cd_model *m) { return m ? m->g->in_channels : 0; }
cd_model_device cd_model_device_used(const cd_model *m) { return m ? m->used : CD_MODEL_CPU; }
const char *cd_model_device_name(const cd_model *m) { return m ? m->device_name : ""; }

/* Shapes the graph for (n, h, w) unless it already is, and sizes the CPU arena. */
static cd_status prepare(cd_model *m, int64_t n, int64_t h, int64_t w, cd_error *err) {
    cd_nn_graph *g = m->g;
    if (m->shaped && m->n == n && m->h == h && m->w == w) return CD_OK;
    m->shaped = false;
    cd_status st = cd_nn_graph_shape(g, n, h, w, m->max_arena, err);
    if (st != CD_OK) return st;
    const cd_nn_shape *os = &g->nodes[g->output].shape;
    if (os->c * os->h * os->w != g->classes)
        return cd_fail(err, CD_ERR_FORMAT, "%s: for input %lldx%lld the output '%s' has %lldx%lldx%lld values per image, not %d classes",
                       g->source, (long long)h, (long long)w, g->nodes[g->output].name, (long long)os->c,
                       (long long)os->h, (long long)os->w, g->classes);
    if (m->used == CD_MODEL_CPU) {
        size_t need = (size_t)g->arena_floats * sizeof(float);
        if (need > m->arena_bytes) {
            cd_buffer_free(m->arena, m->arena_bytes);
            m->arena = NULL;
            m->arena_bytes = 0;
            float *a = cd_buffer_alloc(need);
            if (!a) {
                char b[32];
                return cd_fail(err, CD_ERR_NOMEM, "%s: cannot allocate %s of activation memory", g->source,
                               cd_format_bytes(need, b, sizeof b));
            }
            m->arena = a;
            m->arena_bytes = need;
        }
    }
    m->shaped = true;
    m->n = n;
    m->h = h;
    m->w = w;
    return CD_OK;
}

cd_status cd_model_predict(cd_model *m, const float *x, int64_t n, int64_t h, int64_t w, float *logits, cd_error *err) {
    if (!m || !x || !logits) return cd_fail(err, CD_ERR_ARG, "cd_model_predict: NULL argument");
    if (n < 1 || h < 1 || w < 1)
        return cd_fail(err, CD_ERR_ARG, "cd_model_predict: %s: input size n=%lld h=%lld w=%lld must be positive",
                       m->g->source, (long long)n, (long long)h, (long long)w);
    pthread_mutex_lock(&m->lock);
    cd_nn_graph *g = m->g;
    cd_status st = prepare(m, n, h, w, err);
    if (st == CD_OK) {
        if (m->used == CD_MODEL_VULKAN) {
            st = cd_nn_vk_run(m->vk, g, x, logits, err);
        } else {
            memcpy(m->arena + g->input_offset, x, (size_t)(n * g->in_channels * h * w) * sizeof(float));
            st = cd_nn_ref_run(g, m->arena, m->threads, err);
            if (st == CD_OK)
                memcpy(logits, m->arena + g->nodes[g->output].offset, (size_t)(n * g->classes) * sizeof(float));
        }
    }
    pthread_mutex_unlock(&m->lock);
    return st;
}
