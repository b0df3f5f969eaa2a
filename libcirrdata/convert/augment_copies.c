/* Augmented copies for `convert --augment` (see augment_copies.h and schemas/shard-format.md,
 * "Augmented records"). The work per copy is the loader's: augment/sample_plan.c plans, extracts and
 * renders; only where the source box comes from differs (memory here, chunks there). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cirrdata/orient.h"
#include "augment/augment_impl.h"
#include "convert/augment_copies.h"
#include "augment/sample_plan.h"

/* CPU time of the calling thread: the work itself, whatever else the machine runs. */
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static const char *mode_name(cd_loader_mode m) {
    return m == CD_LOADER_VOLUME ? "volume" : m == CD_LOADER_SLICE ? "slice" : "patch";
}

/* A worker's reusable buffers. */
typedef struct scratch {
    float *fimg, *box;
    uint8_t *mbox;
    size_t fimg_cap, box_cap, mbox_cap;
} scratch;

static void scratch_free(void *p) {
    scratch *s = p;
    if (!s) return;
    free(s->fimg);
    free(s->box);
    free(s->mbox);
    free(s);
}

/* Grows *buf to hold n bytes (contents not kept); false when out of memory. */
static bool reserve(void **buf, size_t *cap, size_t n) {
    if (n <= *cap) return true;
    free(*buf);
    *buf = malloc(n ? n : 1);
    *cap = *buf ? n : 0;
    return *buf != NULL;
}

static cd_status init(cd_aug_copies *ac, const cd_convert_options *o, cd_error *err) {
    if (pthread_key_create(&ac->scratch, scratch_free) != 0)
        return cd_fail(err, CD_ERR_NOMEM, "cannot create a thread key");
    ac->scratch_key = true;
    if (o->copies < 1 || o->copies > 1024)
        return cd_fail(err, CD_ERR_ARG, "augmented copies: K = %u is not in 1..1024", o->copies);
    if (o->aug_mode != CD_LOADER_VOLUME && o->aug_mode != CD_LOADER_PATCH && o->aug_mode != CD_LOADER_SLICE)
        return cd_fail(err, CD_ERR_ARG, "augmented copies: unknown loader mode %d", (int)o->aug_mode);
    if (o->foreground_fraction < 0 || o->foreground_fraction > 1)
        return cd_fail(err, CD_ERR_ARG, "augmented copies: foreground fraction %g is not in [0, 1]",
                       o->foreground_fraction);
    bool any = false, all = true;
    for (int a = 0; a < 3; a++) {
        if (o->aug_patch[a] < 0 || o->aug_patch[a] > 4096)
            return cd_fail(err, CD_ERR_ARG, "augmented copies: patch size %lld is not in 1..4096",
                           (long long)o->aug_patch[a]);
        any |= o->aug_patch[a] > 0;
        all &= o->aug_patch[a] > 0;
    }
    if (any && !all) return cd_fail(err, CD_ERR_ARG, "augmented copies: give all three patch sizes or none");
    if (o->aug_mode == CD_LOADER_PATCH && !all)
        return cd_fail(err, CD_ERR_ARG, "augmented copies: patch mode needs a patch size");
    if (o->aug_mode == CD_LOADER_SLICE && any)
        return cd_fail(err, CD_ERR_ARG, "augmented copies: slice mode takes no patch size");
    cd_status st = cd_aug_pipeline_load(o->augment, &ac->pipe, err);
    if (st != CD_OK) return st;
    if (!(ac->pipe_json = cd_aug_pipeline_to_json(ac->pipe))) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    ac->copies = o->copies;
    ac->seed = o->seed;
    ac->mode = o->aug_mode;
    memcpy(ac->patch, o->aug_patch, sizeof ac->patch);
    ac->foreground_fraction = o->foreground_fraction;
    /* A batch-size-1 loader forces round(1 * fraction) of its one sample onto foreground. */
    ac->fg = o->aug_mode == CD_LOADER_PATCH && lround(o->foreground_fraction) >= 1;
    ac->no_original = o->no_original;
    return CD_OK;
}

cd_status cd_aug_copies_init(cd_aug_copies *ac, const cd_convert_options *o, cd_device_policy *policy,
                             cd_device_slot *slot, cd_error *err) {
    memset(ac, 0, sizeof *ac);
    ac->policy = policy;
    ac->slot = slot;
    cd_status st = init(ac, o, err);
    if (st != CD_OK) cd_aug_copies_free(ac);
    return st;
}

void cd_aug_copies_free(cd_aug_copies *ac) {
    if (!ac) return;
    cd_aug_pipeline_destroy(ac->pipe);
    free(ac->pipe_json);
    if (ac->scratch_key) {
        /* Worker threads have exited (their destructors freed their buffers); the calling thread's, if any: */
        scratch_free(pthread_getspecific(ac->scratch));
        pthread_setspecific(ac->scratch, NULL);
        pthread_key_delete(ac->scratch);
        ac->scratch_key = false;
    }
    ac->pipe = NULL;
    ac->pipe_json = NULL;
}

static json_t *vec3i(const int64_t *v) {
    json_t *a = json_array();
    for (int i = 0; i < 3; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

json_t *cd_aug_copies_manifest(const cd_aug_copies *ac) {
    json_t *o = json_object();
    json_object_set_new(o, "pipeline", json_loads(ac->pipe_json, 0, NULL));
    json_object_set_new(o, "copies", json_integer(ac->copies));
    json_object_set_new(o, "seed", json_integer((json_int_t)ac->seed));
    json_object_set_new(o, "mode", json_string(mode_name(ac->mode)));
    bool fixed = ac->patch[0] > 0;
    json_object_set_new(o, "patch", fixed ? vec3i(ac->patch) : json_null());
    if (ac->mode == CD_LOADER_PATCH) json_object_set_new(o, "foreground_fraction", json_real(ac->foreground_fraction));
    json_object_set_new(o, "no_original", json_boolean(ac->no_original));
    json_object_set_new(o, "device", json_string(cd_device_policy_active(ac->policy) ? "vulkan" : "cpu"));
    json_object_set_new(o, "sample_index", json_string("case"));
    return o;
}

void cd_aug_copy_clear(cd_aug_copy *c) {
    free(c->s.image);
    free(c->s.mask);
    json_decref(c->meta);
    memset(c, 0, sizeof *c);
}

/* One sample to render: a copy (volume, patch) or one slice of a copy (slice mode). */
typedef struct job {
    cd_sample_plan plan;
    float *img;    /* (C, patch) */
    uint8_t *mask; /* (patch) or NULL */
    float *box;    /* GPU path: the extracted source box */
    uint8_t *mbox;
} job;

static void matmul4(const double a[4][4], const double b[4][4], double out[4][4]) {
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double s = 0;
            for (int k = 0; k < 4; k++) s += a[i][k] * b[k][j];
            out[i][j] = s;
        }
}

/* Fills the copy's grid (affine, spacing, orientation); returns whether the affine is exact. */
static bool copy_grid(const cd_sample *src, const cd_sample_plan *p, bool slice_mode, cd_sample *out) {
    double t[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    bool exact = false;
    if (!slice_mode) {
        if (!p->a.elastic) {
            /* src = center + M (o - h): the output grid is an affine image of the source grid. */
            for (int i = 0; i < 3; i++) {
                double off = p->a.center[i];
                for (int k = 0; k < 3; k++) {
                    t[i][k] = p->a.matrix[i][k];
                    off -= p->a.matrix[i][k] * (double)(p->patch[k] - 1) / 2.0;
                }
                t[i][3] = off;
            }
            exact = true;
        } else {
            for (int i = 0; i < 3; i++) t[i][3] = (double)p->corner[i]; /* the undeformed crop's grid */
        }
    }
    matmul4(src->affine, t, out->affine);
    for (int k = 0; k < 3; k++) {
        double s = 0;
        for (int i = 0; i < 3; i++) s += out->affine[i][k] * out->affine[i][k];
        out->spacing[k] = sqrt(s);
    }
    cd_orientation o;
    if (cd_orientation_from_affine(out->affine, &o, NULL) == CD_OK)
        cd_orientation_codes(&o, out->orientation);
    else
        memcpy(out->orientation, src->orientation, sizeof out->orientation);
    return exact;
}

static void mask_facts(cd_sample *s) {
    if (!s->mask) return;
    const size_t X = s->shape[0], Y = s->shape[1], Z = s->shape[2];
    int64_t lo[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, hi[3] = {-1, -1, -1};
    uint64_t n = 0;
    for (size_t x = 0; x < X; x++)
        for (size_t y = 0; y < Y; y++)
            for (size_t z = 0; z < Z; z++) {
                if (!s->mask[(x * Y + y) * Z + z]) continue;
                n++;
                int64_t v[3] = {(int64_t)x, (int64_t)y, (int64_t)z};
                for (int a = 0; a < 3; a++) {
                    if (v[a] < lo[a]) lo[a] = v[a];
                    if (v[a] > hi[a]) hi[a] = v[a];
                }
            }
    s->foreground = n;
    s->has_bbox = n > 0;
    for (int a = 0; n && a < 3; a++) {
        s->bbox[a][0] = lo[a];
        s->bbox[a][1] = hi[a] + 1;
    }
}

static json_t *params_json(const cd_aug_params *a) {
    char *t = cd_aug_params_to_json(a);
    json_t *j = t ? json_loads(t, 0, NULL) : NULL;
    free(t);
    return j ? j : json_null();
}

/* One call of cd_aug_copies_render: the case, the copies' geometry and the buffers shared by its steps. */
typedef struct render_ctx {
    cd_aug_copies *ac;
    const cd_sample *s;
    uint64_t index;
    cd_aug_copy *out;
    uint32_t C, K;
    const uint32_t *shape;
    size_t vox; /* voxels of the case */
    bool slice_mode;
    bool direct;  /* volume and patch modes with float32 records render straight into the copies' images */
    cd_dtype odt; /* the copies' image dtype */
    int64_t patch[3];
    size_t pvox;            /* voxels of one job's output */
    size_t per_copy, njobs; /* jobs per copy (slice mode: one per slice), in all */
    scratch *sc;
    float *fimg; /* what the loader reads back from the plain record: the stored values as float32 */
    job *jobs;
    float *obuf; /* the jobs' outputs when not direct */
    uint8_t *mbuf;
    int32_t (*fgl)[3]; /* the loader's foreground list */
    uint32_t nfg;
} render_ctx;

static void render_geometry(render_ctx *r) {
    const cd_sample *s = r->s;
    r->C = s->channels;
    r->K = r->ac->copies;
    r->shape = s->shape;
    r->vox = (size_t)r->shape[0] * r->shape[1] * r->shape[2];
    r->slice_mode = r->ac->mode == CD_LOADER_SLICE;
    for (int a = 0; a < 3; a++)
        r->patch[a] = r->slice_mode ? (a < 2 ? r->shape[a] : 1) : r->ac->patch[a] > 0 ? r->ac->patch[a] : r->shape[a];
    r->pvox = (size_t)(r->patch[0] * r->patch[1] * r->patch[2]);
    r->per_copy = r->slice_mode ? r->shape[2] : 1;
    r->njobs = (size_t)r->K * r->per_copy;
    r->direct = !r->slice_mode && s->dtype != CD_DTYPE_FLOAT16;
    r->odt = s->dtype == CD_DTYPE_FLOAT16 ? CD_DTYPE_FLOAT16 : CD_DTYPE_FLOAT32;
}

/* The calling thread's reusable buffers (created on first use); NULL when out of memory. */
static scratch *thread_scratch(cd_aug_copies *ac) {
    scratch *sc = pthread_getspecific(ac->scratch);
    if (!sc && (sc = calloc(1, sizeof *sc)) && pthread_setspecific(ac->scratch, sc) != 0) {
        free(sc);
        sc = NULL;
    }
    return sc;
}

/* The float image, the jobs, their output buffers, the foreground list and (direct) the copies' images. */
static cd_status render_alloc(render_ctx *r, json_t *fg_locations, cd_error *err) {
    const size_t C = r->C;
    r->fimg = reserve((void **)&r->sc->fimg, &r->sc->fimg_cap, C * r->vox * sizeof(float)) ? r->sc->fimg : NULL;
    r->jobs = calloc(r->njobs, sizeof *r->jobs);
    r->obuf = r->direct ? NULL : malloc(r->njobs * C * r->pvox * sizeof *r->obuf);
    r->mbuf = r->s->mask && !r->direct ? malloc(r->njobs * r->pvox) : NULL;
    r->fgl = calloc(json_array_size(fg_locations) + 1, sizeof *r->fgl);
    if (!(r->fimg && r->jobs && (r->obuf || r->direct) && (r->mbuf || r->direct || !r->s->mask) && r->fgl))
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    for (uint32_t k = 0; r->direct && k < r->K; k++) {
        cd_sample *o = &r->out[k].s;
        o->image = malloc(C * r->pvox * sizeof(float));
        o->mask = r->s->mask ? malloc(r->pvox) : NULL;
        if (!o->image || (r->s->mask && !o->mask)) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    return CD_OK;
}

static void render_free(render_ctx *r) {
    free(r->jobs);
    free(r->obuf);
    free(r->mbuf);
    free(r->fgl);
}

/* The case's stored values as float32 (what the loader reads back from the plain record). */
static cd_status to_float_image(const cd_sample *s, size_t n, float *fimg, cd_error *err) {
    for (size_t i = 0; i < n; i++) {
        switch (s->dtype) {
        case CD_DTYPE_FLOAT32: fimg[i] = ((const float *)s->image)[i]; break;
        case CD_DTYPE_INT16: fimg[i] = ((const int16_t *)s->image)[i]; break;
        case CD_DTYPE_UINT8: fimg[i] = ((const uint8_t *)s->image)[i]; break;
        case CD_DTYPE_FLOAT16: fimg[i] = cd_half_to_float(((const uint16_t *)s->image)[i]); break;
        default: return cd_fail(err, CD_ERR_UNSUPPORTED, "augmented copies: image dtype %s", cd_dtype_name(s->dtype));
        }
    }
    return CD_OK;
}

/* The loader's foreground list: the metadata's fg_locations, entries inside the record. */
static void foreground_list(render_ctx *r, json_t *fg_locations) {
    size_t q;
    json_t *pt;
    r->nfg = 0;
    json_array_foreach(fg_locations, q, pt) {
        bool ok = json_array_size(pt) == 3;
        for (int a = 0; ok && a < 3; a++) {
            json_int_t v = json_integer_value(json_array_get(pt, (size_t)a));
            ok = v >= 0 && v < (json_int_t)r->shape[a];
            if (ok) r->fgl[r->nfg][a] = (int32_t)v;
        }
        if (ok) r->nfg++;
    }
}

/* Job j is copy j / per_copy (epoch k), slice j % per_copy in slice mode: planned as the loader would. */
static void plan_jobs(render_ctx *r) {
    const cd_aug_copies *ac = r->ac;
    for (size_t j = 0; j < r->njobs; j++) {
        job *jb = &r->jobs[j];
        const uint64_t k = j / r->per_copy;
        const int32_t z = r->slice_mode ? (int32_t)(j % r->per_copy) : -1;
        cd_sample_plan_make(ac->pipe, ac->mode, ac->seed, k, r->index, z, r->shape, r->patch, ac->fg, r->nfg,
                            (const int32_t(*)[3])r->fgl, &jb->plan);
        jb->img = r->direct ? r->out[k].s.image : r->obuf + j * r->C * r->pvox;
        jb->mask = r->direct ? r->out[k].s.mask : r->mbuf ? r->mbuf + j * r->pvox : NULL;
    }
}

/* Extracts every non-empty job's box and lists it for the GPU warp; returns how many, or -1 when out of memory. */
static int gpu_items(render_ctx *r, cd_gpu_spatial_item *items, cd_aug_params *params) {
    const uint32_t C = r->C;
    int n = 0;
    for (size_t j = 0; j < r->njobs; j++) {
        job *jb = &r->jobs[j];
        if (jb->plan.empty) continue;
        const size_t bvox = (size_t)(jb->plan.bshape[0] * jb->plan.bshape[1] * jb->plan.bshape[2]);
        jb->box = malloc((size_t)C * bvox * sizeof(float));
        jb->mbox = r->s->mask ? malloc(bvox) : NULL;
        if (!jb->box || (r->s->mask && !jb->mbox)) return -1;
        cd_sample_plan_extract(&jb->plan, r->fimg, r->s->mask, C, r->shape, jb->box, jb->mbox);
        params[n] = jb->plan.a;
        items[n] = (cd_gpu_spatial_item){jb->box,
                                         jb->mbox,
                                         {jb->plan.lo[0], jb->plan.lo[1], jb->plan.lo[2]},
                                         {jb->plan.bshape[0], jb->plan.bshape[1], jb->plan.bshape[2]},
                                         jb->img,
                                         jb->mask};
        n++;
    }
    return n;
}

/* The arguments of one warp on the device. */
typedef struct warp_call {
    const cd_aug_params *params;
    int n;
    const cd_gpu_spatial_item *items;
    uint32_t C;
    const int64_t *patch;
} warp_call;

static cd_status warp_items(cd_gpu_context *gpu, void *user, cd_error *err) {
    const warp_call *c = user;
    return cd_gpu_aug_spatial(gpu, c->params, c->n, c->items, c->C, c->patch, err);
}

/* One cd_gpu_aug_spatial of the n items under the device policy; false: the CPU warps them. */
static bool warp_on_device(cd_aug_copies *ac, const cd_aug_params *params, int n, const cd_gpu_spatial_item *items,
                           uint32_t C, const int64_t patch[3]) {
    warp_call c = {params, n, items, C, patch};
    return cd_device_slot_run(ac->policy, ac->slot, warp_items, &c, "warp augmented copies", (uint64_t)n);
}

const char *cd_aug_copies_device(const cd_aug_copies *ac) {
    return cd_device_policy_active(ac->policy) ? "vulkan" : "cpu";
}

/* The spatial warp of all jobs at once on the GPU, then the intensity ops on the CPU. *done is false
 * when the GPU did not warp them (the CPU does, as the device policy says). */
static cd_status warp_on_gpu(render_ctx *r, bool *done, cd_error *err) {
    cd_aug_copies *ac = r->ac;
    cd_gpu_spatial_item *items = calloc(r->njobs, sizeof *items);
    cd_aug_params *params = calloc(r->njobs, sizeof *params);
    const int n = items && params ? gpu_items(r, items, params) : -1;
    *done = n == 0;
    if (n > 0 && n <= 1 << 20) *done = warp_on_device(ac, params, n, items, r->C, r->patch);
    cd_status st = CD_OK;
    for (size_t j = 0; st == CD_OK && *done && j < r->njobs; j++) {
        job *jb = &r->jobs[j];
        if (jb->plan.empty)
            st = cd_sample_plan_render(&jb->plan, false, NULL, NULL, r->C, jb->img, jb->mask, err);
        else
            st = cd_aug_apply_intensity(&jb->plan.a, jb->img, r->C, r->patch, err);
    }
    for (size_t j = 0; j < r->njobs; j++) {
        free(r->jobs[j].box);
        free(r->jobs[j].mbox);
    }
    free(items);
    free(params);
    return st;
}

/* The loader's per-sample rendering, job by job, through the thread's box buffers. */
static cd_status warp_on_cpu(render_ctx *r, cd_error *err) {
    const uint32_t C = r->C;
    const cd_sample *s = r->s;
    scratch *sc = r->sc;
    cd_status st = CD_OK;
    for (size_t j = 0; st == CD_OK && j < r->njobs; j++) {
        job *jb = &r->jobs[j];
        const size_t bvox = jb->plan.empty ? 0 : (size_t)(jb->plan.bshape[0] * jb->plan.bshape[1] * jb->plan.bshape[2]);
        if (!reserve((void **)&sc->box, &sc->box_cap, (size_t)C * bvox * sizeof(float)) ||
            (s->mask && !reserve((void **)&sc->mbox, &sc->mbox_cap, bvox)))
            return cd_fail(err, CD_ERR_NOMEM, "out of memory");
        cd_sample_plan_extract(&jb->plan, r->fimg, s->mask, C, r->shape, sc->box, sc->mbox);
        st = cd_sample_plan_render(&jb->plan, true, sc->box, s->mask ? sc->mbox : NULL, C, jb->img, jb->mask, err);
    }
    return st;
}

/* Copy k's voxels in the record layout from its jobs' outputs (direct: rendered in place already). */
static void assemble_voxels(const render_ctx *r, uint32_t k, cd_sample *o) {
    const uint32_t C = r->C;
    const size_t ovox = (size_t)o->shape[0] * o->shape[1] * o->shape[2];
    float *fo = r->odt == CD_DTYPE_FLOAT32 ? o->image : NULL;
    uint16_t *ho = r->odt == CD_DTYPE_FLOAT16 ? o->image : NULL;
    const job *first = &r->jobs[(size_t)k * r->per_copy];
    if (r->direct) return;
    if (!r->slice_mode) {
        for (size_t i = 0; i < (size_t)C * ovox; i++) {
            if (fo)
                fo[i] = first->img[i];
            else
                ho[i] = cd_float_to_half(first->img[i]);
        }
        if (o->mask) memcpy(o->mask, first->mask, ovox);
        return;
    }
    /* Slice z of the copy is job (k, z): (C, X, Y, 1) into (C, X, Y, Z). */
    const size_t XY = (size_t)r->shape[0] * r->shape[1], Z = r->shape[2];
    for (size_t z = 0; z < Z; z++) {
        const job *jb = &r->jobs[(size_t)k * r->per_copy + z];
        for (uint32_t c = 0; c < C; c++)
            for (size_t xy = 0; xy < XY; xy++) {
                float v = jb->img[(size_t)c * XY + xy];
                size_t d = ((size_t)c * XY + xy) * Z + z;
                if (fo)
                    fo[d] = v;
                else
                    ho[d] = cd_float_to_half(v);
            }
        for (size_t xy = 0; o->mask && xy < XY; xy++) o->mask[xy * Z + z] = jb->mask[xy];
    }
}

/* Copy k's "augmentation" metadata: what was drawn, and where the copy's grid is affine. */
static json_t *copy_meta(const render_ctx *r, uint32_t k, bool exact) {
    const cd_aug_copies *ac = r->ac;
    const job *first = &r->jobs[(size_t)k * r->per_copy];
    json_t *m = json_object();
    json_object_set_new(m, "copy", json_integer(k));
    json_object_set_new(m, "case", json_integer((json_int_t)r->index));
    json_object_set_new(m, "seed", json_integer((json_int_t)ac->seed));
    json_object_set_new(m, "epoch", json_integer(k));
    json_object_set_new(m, "mode", json_string(mode_name(ac->mode)));
    json_object_set_new(m, "patch", vec3i(r->patch));
    json_object_set_new(m, "pipeline", json_string(ac->pipe->name));
    int64_t sshape[3] = {r->shape[0], r->shape[1], r->shape[2]};
    json_object_set_new(m, "source_shape", vec3i(sshape));
    json_object_set_new(m, "affine_exact", json_boolean(exact));
    if (!r->slice_mode) {
        json_object_set_new(m, "corner", vec3i(first->plan.corner));
        json_object_set_new(m, "sample_id", json_integer((json_int_t)first->plan.sample_id));
        if (ac->mode == CD_LOADER_PATCH) json_object_set_new(m, "foreground_centred", json_boolean(first->plan.fg));
        json_object_set_new(m, "params", params_json(&first->plan.a));
        return m;
    }
    json_t *sl = json_array();
    for (size_t z = 0; z < r->per_copy; z++) {
        const job *jb = &r->jobs[(size_t)k * r->per_copy + z];
        json_t *e = json_object();
        json_object_set_new(e, "z", json_integer((json_int_t)z));
        json_object_set_new(e, "sample_id", json_integer((json_int_t)jb->plan.sample_id));
        json_object_set_new(e, "params", params_json(&jb->plan.a));
        json_array_append_new(sl, e);
    }
    json_object_set_new(m, "slices", sl);
    return m;
}

/* Copy k in the record layout: its shape, voxels, grid, mask facts and metadata. */
static cd_status assemble_copy(const render_ctx *r, uint32_t k, cd_error *err) {
    cd_aug_copy *cp = &r->out[k];
    cd_sample *o = &cp->s;
    o->channels = r->C;
    o->dtype = r->odt;
    for (int a = 0; a < 3; a++) o->shape[a] = r->slice_mode ? r->shape[a] : (uint32_t)r->patch[a];
    const size_t ovox = (size_t)o->shape[0] * o->shape[1] * o->shape[2];
    if (!r->direct) {
        o->image = malloc((size_t)r->C * ovox * cd_dtype_size(r->odt));
        o->mask = r->s->mask ? malloc(ovox) : NULL;
    }
    if (!o->image || (r->s->mask && !o->mask)) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    assemble_voxels(r, k, o);
    bool exact = copy_grid(r->s, &r->jobs[(size_t)k * r->per_copy].plan, r->slice_mode, o);
    mask_facts(o);
    cp->meta = copy_meta(r, k, exact);
    return CD_OK;
}

cd_status cd_aug_copies_render(cd_aug_copies *ac, const cd_sample *s, json_t *fg_locations, uint64_t index,
                               cd_aug_copy *out, double *seconds, cd_error *err) {
    const double t0 = now_s();
    render_ctx r = {.ac = ac, .s = s, .index = index, .out = out};
    render_geometry(&r);
    memset(out, 0, r.K * sizeof *out);
    if (!(r.sc = thread_scratch(ac))) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    cd_status st = render_alloc(&r, fg_locations, err);
    if (st == CD_OK) st = to_float_image(s, (size_t)r.C * r.vox, r.fimg, err);
    if (st == CD_OK) {
        foreground_list(&r, fg_locations);
        plan_jobs(&r);
    }
    /* The spatial warp: on the GPU for all jobs at once when there is one, else job by job. */
    bool done_gpu = false;
    if (st == CD_OK && cd_device_policy_active(ac->policy)) st = warp_on_gpu(&r, &done_gpu, err);
    if (st == CD_OK && !done_gpu) st = warp_on_cpu(&r, err);
    for (uint32_t k = 0; st == CD_OK && k < r.K; k++) st = assemble_copy(&r, k, err);
    if (st != CD_OK)
        for (uint32_t k = 0; k < r.K; k++) cd_aug_copy_clear(&out[k]);
    render_free(&r);
    *seconds += now_s() - t0;
    return st;
}
