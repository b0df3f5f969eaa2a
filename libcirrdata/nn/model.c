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
#include "gpu/device_policy.h"

#define MODEL_DEFAULT_ARENA (4ull << 30)

struct cd_model {
    pthread_mutex_t lock;
    cd_nn_graph *g;
    cd_device used; /* CD_DEVICE_CPU or CD_DEVICE_VULKAN (until the policy gives the device up) */
    char device_name[640];
    int threads;
    uint64_t max_arena;
    bool shaped; /* g is shaped for (n, h, w) below */
    int64_t n, h, w;
    float *arena; /* CPU executor: cd_buffer_alloc of arena_bytes */
    size_t arena_bytes;
    cd_device_policy policy; /* cirrdata/device.h */
    cd_device_slot slot;     /* the Vulkan executor's context */
    bool fp16;
    cd_nn_vk *vk; /* NULL after a re-created context until the next call builds it again */
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

/* The executor's name: "vulkan: NAME (fp16|fp32)". */
static void name_vulkan(cd_model *m, bool fp16_used) {
    snprintf(m->device_name, sizeof m->device_name, "vulkan: %s (%s)", cd_gpu_device(m->slot.gpu)->name,
             fp16_used ? "fp16" : "fp32");
}

/* The slot's context is about to be destroyed (a lost device): the executor goes first. */
static void drop_executor(void *user) {
    cd_model *m = user;
    cd_nn_vk_destroy(m->vk);
    m->vk = NULL;
}

/* The device policy resolves o->device; on Vulkan the executor is built (its failure is the open's). */
static cd_status open_device(cd_model *m, const cd_model_options *o, const char *path, cd_error *err) {
    cd_status st = cd_device_policy_init(&m->policy, o->device, o->gpu, path, err);
    if (st == CD_OK && cd_device_policy_active(&m->policy)) st = cd_device_slot_open(&m->policy, &m->slot, err);
    if (st != CD_OK || !cd_device_policy_active(&m->policy)) {
        char name[320];
        cd_device_policy_describe(&m->policy, NULL, 0, name, sizeof name);
        if (st == CD_OK && strncmp(name, "cpu (", 5) == 0) /* auto without a hardware GPU: why */
            snprintf(m->device_name, sizeof m->device_name, "cpu (%d thread%s; %.500s)", m->threads,
                     m->threads == 1 ? "" : "s", name + 5);
        return st;
    }
    m->slot.before_reset = drop_executor;
    m->slot.user = m;
    bool fp16_used = false;
    cd_error why;
    cd_error_clear(&why);
    st = cd_nn_vk_create(m->slot.gpu, m->g, m->fp16, &fp16_used, &m->vk, &why);
    if (st != CD_OK && o->device == CD_DEVICE_AUTO) { /* auto: the reason, and the C executor */
        snprintf(m->device_name, sizeof m->device_name, "cpu (%d thread%s; vulkan not used: %.500s)", m->threads,
                 m->threads == 1 ? "" : "s", why.message);
        return CD_OK;
    }
    if (st != CD_OK) return cd_fail(err, st, "%s", why.message);
    m->used = CD_DEVICE_VULKAN;
    name_vulkan(m, fp16_used);
    return CD_OK;
}

void cd_model_options_init(cd_model_options *o) { memset(o, 0, sizeof *o); }

cd_status cd_model_open(const char *path, const cd_model_options *options, cd_model **out, cd_error *err) {
    if (!out) return cd_fail(err, CD_ERR_ARG, "cd_model_open: NULL output pointer");
    *out = NULL;
    if (!path) return cd_fail(err, CD_ERR_ARG, "cd_model_open: NULL path");
    cd_model_options o;
    memset(&o, 0, sizeof o);
    if (options) o = *options;
    if ((int)o.device < CD_DEVICE_CPU || (int)o.device > CD_DEVICE_AUTO)
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

    m->used = CD_DEVICE_CPU;
    m->fp16 = o.fp16;
    snprintf(m->device_name, sizeof m->device_name, "cpu (%d thread%s)", m->threads, m->threads == 1 ? "" : "s");
    if ((st = open_device(m, &o, path, err)) != CD_OK) {
        cd_model_close(m);
        return st;
    }
    *out = m;
    return CD_OK;
}

void cd_model_close(cd_model *m) {
    if (!m) return;
    cd_nn_vk_destroy(m->vk);
    cd_device_slot_close(&m->slot);
    cd_device_policy_free(&m->policy);
    cd_buffer_free(m->arena, m->arena_bytes);
    cd_nn_graph_free(m->g);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

const char *cd_model_arch(const cd_model *m) { return m ? m->g->arch : ""; }
int cd_model_classes(const cd_model *m) { return m ? m->g->classes : 0; }
int cd_model_in_channels(const cd_model *m) { return m ? m->g->in_channels : 0; }
cd_device cd_model_device_used(const cd_model *m) { return m ? m->used : CD_DEVICE_CPU; }
const char *cd_model_device_name(const cd_model *m) { return m ? m->device_name : ""; }

/* Shapes the graph for (n, h, w) unless it already is. */
static cd_status prepare(cd_model *m, int64_t n, int64_t h, int64_t w, cd_error *err) {
    cd_nn_graph *g = m->g;
    if (m->shaped && m->n == n && m->h == h && m->w == w) return CD_OK;
    m->shaped = false;
    cd_status st = cd_nn_graph_shape(g, n, h, w, m->max_arena, err);
    if (st != CD_OK) return st;
    const cd_nn_shape *os = &g->nodes[g->output].shape;
    if (os->c * os->h * os->w != g->classes)
        return cd_fail(err, CD_ERR_FORMAT,
                       "%s: for input %lldx%lld the output '%s' has %lldx%lldx%lld values per image, not %d classes",
                       g->source, (long long)h, (long long)w, g->nodes[g->output].name, (long long)os->c,
                       (long long)os->h, (long long)os->w, g->classes);
    m->shaped = true;
    m->n = n;
    m->h = h;
    m->w = w;
    return CD_OK;
}

/* Sizes the CPU executor's activation memory for the shaped graph. */
static cd_status cpu_arena(cd_model *m, cd_error *err) {
    const cd_nn_graph *g = m->g;
    size_t need = (size_t)g->arena_floats * sizeof(float);
    if (need <= m->arena_bytes) return CD_OK;
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
    return CD_OK;
}

static cd_status run_cpu(cd_model *m, const float *x, float *logits, cd_error *err) {
    cd_nn_graph *g = m->g;
    cd_status st = cpu_arena(m, err);
    if (st != CD_OK) return st;
    memcpy(m->arena + g->input_offset, x, (size_t)(m->n * g->in_channels * m->h * m->w) * sizeof(float));
    st = cd_nn_ref_run(g, m->arena, m->threads, err);
    if (st == CD_OK) memcpy(logits, m->arena + g->nodes[g->output].offset, (size_t)(m->n * g->classes) * sizeof(float));
    return st;
}

/* One pass's arguments. */
typedef struct pass_call {
    cd_model *m;
    const float *x;
    float *logits;
} pass_call;

/* The pass on the slot's context; after a re-created context the executor is built again first. */
static cd_status vulkan_pass(cd_gpu_context *gpu, void *user, cd_error *err) {
    pass_call *c = user;
    cd_model *m = c->m;
    if (!m->vk) {
        bool fp16_used = false;
        cd_status st = cd_nn_vk_create(gpu, m->g, m->fp16, &fp16_used, &m->vk, err);
        if (st != CD_OK) return st;
        name_vulkan(m, fp16_used);
    }
    return cd_nn_vk_run(m->vk, m->g, c->x, c->logits, err);
}

/* One pass on the device under the policy: true when it ran there, false when the CPU is to run it
 * (after the device was given up, the model stays on the CPU and says why in its name). */
static bool run_vulkan(cd_model *m, const float *x, float *logits) {
    pass_call c = {m, x, logits};
    if (cd_device_slot_run(&m->policy, &m->slot, vulkan_pass, &c, "run the network", (uint64_t)m->n)) return true;
    if (!cd_device_policy_active(&m->policy)) {
        char note[384];
        cd_device_policy_describe(&m->policy, note, sizeof note, NULL, 0);
        m->used = CD_DEVICE_CPU;
        snprintf(m->device_name, sizeof m->device_name, "cpu (%d thread%s; vulkan given up: %.500s)", m->threads,
                 m->threads == 1 ? "" : "s", note);
    }
    return false;
}

cd_status cd_model_predict(cd_model *m, const float *x, int64_t n, int64_t h, int64_t w, float *logits, cd_error *err) {
    if (!m || !x || !logits) return cd_fail(err, CD_ERR_ARG, "cd_model_predict: NULL argument");
    if (n < 1 || h < 1 || w < 1)
        return cd_fail(err, CD_ERR_ARG, "cd_model_predict: %s: input size n=%lld h=%lld w=%lld must be positive",
                       m->g->source, (long long)n, (long long)h, (long long)w);
    pthread_mutex_lock(&m->lock);
    cd_status st = prepare(m, n, h, w, err);
    if (st == CD_OK && !(m->used == CD_DEVICE_VULKAN && run_vulkan(m, x, logits))) st = run_cpu(m, x, logits, err);
    pthread_mutex_unlock(&m->lock);
    return st;
}
