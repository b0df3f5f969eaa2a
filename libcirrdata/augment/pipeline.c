/* Augmentation pipelines: built-ins, strict JSON parsing (schemas/augment.schema.json), canonical JSON.
 *
 * A pipeline holds at most one entry per operation kind; whatever the order of "ops" in the file,
 * operations are resolved and applied in the fixed order of cd_aug_kind (spatial, then intensity
 * in nnU-Net v2's order), and cd_aug_pipeline_to_json writes them in that order. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "augment/augment_impl.h"
#include "core/json_check.h"
#include "io/file.h"

const char *const cd_aug_kind_names[CD_AUG_NKINDS] = {"rotation",   "scaling",  "elastic", "noise", "blur",
                                                      "brightness", "contrast", "lowres",  "gamma", "mirror"};

static const char *const builtin_names[] = {"nnunet", "cirrhosisstage", "none", NULL};

static void set_op(cd_aug_pipeline *p, cd_aug_kind k, double prob, double lo, double hi) {
    cd_aug_op *o = &p->ops[k];
    memset(o, 0, sizeof *o);
    o->present = true;
    o->p = prob;
    o->range[0] = lo;
    o->range[1] = hi;
    o->p_per_channel = 1.0;
    o->per_axis = true;
    o->truncate = 4.0;
}

static void op_defaults(cd_aug_op *o) {
    o->p_per_channel = 1.0;
    o->per_axis = true;
    o->truncate = 4.0;
    o->axes[0] = o->axes[1] = o->axes[2] = true;
}

static cd_status builtin(const char *name, cd_aug_pipeline *p, cd_error *err) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->dims = 3;
    if (!strcmp(name, "none")) return CD_OK;
    if (!strcmp(name, "nnunet")) {
        /* nnU-Net v2 nnUNetTrainer.get_training_transforms (batchgeneratorsv2), 3D, isotropic data. */
        set_op(p, CD_AUG_ROTATION, 0.2, -30, 30);
        for (int i = 0; i < 3; i++) p->ops[CD_AUG_ROTATION].axes[i] = true;
        set_op(p, CD_AUG_SCALING, 0.2, 0.7, 1.4);
        set_op(p, CD_AUG_ELASTIC, 0.0, 0, 200); /* off, as in nnU-Net; batchgenerators' ranges */
        p->ops[CD_AUG_ELASTIC].range2[0] = 9;
        p->ops[CD_AUG_ELASTIC].range2[1] = 13;
        set_op(p, CD_AUG_NOISE, 0.1, 0, 0.1);
        set_op(p, CD_AUG_BLUR, 0.2, 0.5, 1.0);
        p->ops[CD_AUG_BLUR].p_per_channel = 0.5;
        set_op(p, CD_AUG_BRIGHTNESS, 0.15, 0.75, 1.25);
        set_op(p, CD_AUG_CONTRAST, 0.15, 0.75, 1.25);
        set_op(p, CD_AUG_LOWRES, 0.25, 0.5, 1.0);
        p->ops[CD_AUG_LOWRES].p_per_channel = 0.5;
        set_op(p, CD_AUG_GAMMA, 0.3, 0.7, 1.5);
        p->ops[CD_AUG_GAMMA].invert_p = 0.1;
        set_op(p, CD_AUG_MIRROR, 0.5, 0, 0);
        for (int i = 0; i < 3; i++) p->ops[CD_AUG_MIRROR].axes[i] = true;
        return CD_OK;
    }
    if (!strcmp(name, "cirrhosisstage")) {
        /* torchvision: RandomHorizontalFlip(0.3), RandomVerticalFlip(0.3), RandomRotation(10). */
        p->dims = 2;
        set_op(p, CD_AUG_ROTATION, 1.0, -10, 10);
        p->ops[CD_AUG_ROTATION].axes[2] = true;
        set_op(p, CD_AUG_MIRROR, 0.3, 0, 0);
        p->ops[CD_AUG_MIRROR].axes[0] = p->ops[CD_AUG_MIRROR].axes[1] = true;
        return CD_OK;
    }
    return cd_fail(err, CD_ERR_ARG,
                   "unknown augmentation pipeline '%s' (built-ins: nnunet, cirrhosisstage, none; or a .json file)",
                   name);
}

/* ---- parsing ---- */

typedef struct parse_ctx {
    const char *origin;
    cd_error *err;
} parse_ctx;

#define BAD(ctx, ...) cd_fail((ctx)->err, CD_ERR_FORMAT, __VA_ARGS__)
#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        cd_status st_ = (x);                                                                                           \
        if (st_ != CD_OK) return st_;                                                                                  \
    } while (0)

static cd_status check_keys(parse_ctx *c, json_t *obj, const char *where, const char *const *allowed) {
    return cd_json_check_keys(obj, allowed, c->origin, "augmentation pipeline", where, c->err);
}

static cd_status get_number(parse_ctx *c, json_t *obj, const char *where, const char *key, double lo, double hi,
                            double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return CD_OK;
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return BAD(c, "%s: augmentation pipeline%s: '%s' must be a number in [%g, %g]", c->origin, where, key, lo, hi);
    *out = json_number_value(v);
    return CD_OK;
}

/* A [lo, hi] pair with lo <= hi, both within [min, max] (open at min when open_min). */
static cd_status get_range(parse_ctx *c, json_t *obj, const char *where, const char *key, double min, double max,
                           bool open_min, bool required, double out[2]) {
    json_t *v = json_object_get(obj, key);
    if (!v) return required ? BAD(c, "%s: augmentation pipeline%s: '%s' is required", c->origin, where, key) : CD_OK;
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_number(json_array_get(v, 0)) ||
        !json_is_number(json_array_get(v, 1)))
        return BAD(c, "%s: augmentation pipeline%s: '%s' must be an array of 2 numbers [low, high]", c->origin, where,
                   key);
    double a = json_number_value(json_array_get(v, 0)), b = json_number_value(json_array_get(v, 1));
    for (int i = 0; i < 2; i++) {
        double d = i ? b : a;
        if (!(open_min ? d > min : d >= min) || !(d <= max))
            return BAD(c, "%s: augmentation pipeline%s: '%s' values must be in %s%g, %g]", c->origin, where, key,
                       open_min ? "(" : "[", min, max);
    }
    if (!(a <= b))
        return BAD(c, "%s: augmentation pipeline%s: '%s' is reversed (%g > %g)", c->origin, where, key, a, b);
    out[0] = a;
    out[1] = b;
    return CD_OK;
}

static cd_status get_axes(parse_ctx *c, json_t *obj, const char *where, bool allow_z, bool out[3]) {
    json_t *v = json_object_get(obj, "axes");
    if (!v) return CD_OK;
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    bool seen[3] = {false, false, false};
    if (!s || !*s)
        return BAD(c, "%s: augmentation pipeline%s: 'axes' must be a non-empty string of x, y, z", c->origin, where);
    for (; *s; s++) {
        int a = *s == 'x' ? 0 : *s == 'y' ? 1 : *s == 'z' ? 2 : -1;
        if (a < 0 || seen[a])
            return BAD(c, "%s: augmentation pipeline%s: 'axes' must list distinct letters among x, y, z", c->origin,
                       where);
        if (a == 2 && !allow_z)
            return BAD(c, "%s: augmentation pipeline%s: a 2D pipeline cannot use axis z here", c->origin, where);
        seen[a] = true;
    }
    memcpy(out, seen, sizeof seen);
    return CD_OK;
}

static cd_status parse_op(parse_ctx *c, json_t *o, int index, cd_aug_pipeline *p) {
    char where[64];
    snprintf(where, sizeof where, ".ops[%d]", index);
    if (!json_is_object(o)) return BAD(c, "%s: augmentation pipeline%s: each op must be an object", c->origin, where);
    json_t *name = json_object_get(o, "op");
    if (!json_is_string(name))
        return BAD(c, "%s: augmentation pipeline%s: 'op' (a string) is required", c->origin, where);
    int k = -1;
    for (int i = 0; i < CD_AUG_NKINDS; i++)
        if (!strcmp(cd_aug_kind_names[i], json_string_value(name))) k = i;
    if (k < 0)
        return BAD(c,
                   "%s: augmentation pipeline%s: unknown op '%s' (rotation, scaling, elastic, noise, blur, brightness, "
                   "contrast, lowres, gamma, mirror)",
                   c->origin, where, json_string_value(name));
    snprintf(where, sizeof where, ".ops[%d] (%s)", index, cd_aug_kind_names[k]);
    cd_aug_op *op = &p->ops[k];
    if (op->present) return BAD(c, "%s: augmentation pipeline%s: op listed twice", c->origin, where);
    memset(op, 0, sizeof *op);
    op_defaults(op);
    op->present = true;
    if (!json_object_get(o, "p")) return BAD(c, "%s: augmentation pipeline%s: 'p' is required", c->origin, where);
    TRY(get_number(c, o, where, "p", 0, 1, &op->p));
    bool planar = p->dims == 2;
    switch ((cd_aug_kind)k) {
    case CD_AUG_ROTATION: {
        static const char *const keys[] = {"op", "p", "range_deg", "axes", NULL};
        TRY(check_keys(c, o, where, keys));
        TRY(get_range(c, o, where, "range_deg", -180, 180, false, true, op->range));
        if (planar) op->axes[0] = op->axes[1] = false;
        TRY(get_axes(c, o, where, true, op->axes));
        if (planar && (op->axes[0] || op->axes[1]))
            return BAD(c, "%s: augmentation pipeline%s: a 2D pipeline rotates about z only (\"axes\": \"z\")",
                       c->origin, where);
        break;
    }
    case CD_AUG_SCALING: {
        static const char *const keys[] = {"op", "p", "range", NULL};
        TRY(check_keys(c, o, where, keys));
        TRY(get_range(c, o, where, "range", 0, 100, true, true, op->range));
        break;
    }
    case CD_AUG_ELASTIC: {
        static const char *const keys[] = {"op", "p", "alpha", "sigma", NULL};
        TRY(check_keys(c, o, where, keys));
        TRY(get_range(c, o, where, "alpha", 0, 10000, false, true, op->range));
        TRY(get_range(c, o, where, "sigma", 0, 1000, true, true, op->range2));
        break;
    }
    case CD_AUG_NOISE: {
        static const char *const keys[] = {"op", "p", "sigma", NULL};
        TRY(check_keys(c, o, where, keys));
        TRY(get_range(c, o, where, "sigma", 0, 1e6, false, true, op->range));
        break;
    }
    case CD_AUG_BLUR: {
        static const char *const keys[] = {"op", "p", "sigma", "p_per_channel", "per_axis", "truncate", NULL};
        TRY(check_keys(c, o, where, keys));
        TRY(get_range(c, o, where, "sigma", 0, 100, false, true, op->range));
        TRY(get_number(c, o, where, "p_per_channel", 0, 1, &op->p_per_channel));
        TRY(get_number(c, o, where, "truncate", 0.5, 20, &op->truncate));
        json_t *pa = json_object_get(o, "per_axis");
        if (pa && !json_is_boolean(pa))
            return BAD(c, "%s: augmentation pipeline%s: 'per_axis' must be true or false", c->origin, where);
        if (pa) op->per_axis = json_is_true(pa);
        break;
    }
    case CD_AUG_BRIGHTNESS:
    case CD_AUG_CONTRAST: {
        static const char *const keys[] = {"op", "p", "range", NULL};
        TRY(check_keys(c, o, where, keys));
        TRY(get_range(c, o, where, "range", 0, 100, false, true, op->range));
        break;
    }
    case CD_AUG_LOWRES: {
        static const char *const keys[] = {"op", "p", "zoom", "p_per_channel", NULL};
        TRY(check_keys(c, o, where, keys));
        TRY(get_range(c, o, where, "zoom", 0, 1, true, true, op->range));
        TRY(get_number(c, o, where, "p_per_channel", 0, 1, &op->p_per_channel));
        break;
    }
    case CD_AUG_GAMMA: {
        static const char *const keys[] = {"op", "p", "range", "invert_p", NULL};
        TRY(check_keys(c, o, where, keys));
        TRY(get_range(c, o, where, "range", 0, 100, true, true, op->range));
        TRY(get_number(c, o, where, "invert_p", 0, 1, &op->invert_p));
        break;
    }
    case CD_AUG_MIRROR: {
        static const char *const keys[] = {"op", "p", "axes", NULL};
        TRY(check_keys(c, o, where, keys));
        if (planar) op->axes[2] = false;
        TRY(get_axes(c, o, where, !planar, op->axes));
        break;
    }
    default: return BAD(c, "%s: augmentation pipeline%s: internal error", c->origin, where);
    }
    return CD_OK;
}

static cd_status parse_obj(parse_ctx *c, json_t *root, cd_aug_pipeline *p) {
    static const char *const top[] = {"name", "version", "description", "dims", "ops", NULL};
    if (!json_is_object(root)) return BAD(c, "%s: an augmentation pipeline must be a JSON object", c->origin);
    TRY(check_keys(c, root, "", top));
    json_t *name = json_object_get(root, "name"), *version = json_object_get(root, "version");
    if (!json_is_string(name) || json_string_length(name) < 1 || json_string_length(name) > 64)
        return BAD(c, "%s: augmentation pipeline: 'name' (1..64 characters) is required", c->origin);
    if (!json_is_integer(version) || json_integer_value(version) != 1)
        return BAD(c, "%s: augmentation pipeline: 'version' must be 1", c->origin);
    json_t *desc = json_object_get(root, "description");
    if (desc && !json_is_string(desc))
        return BAD(c, "%s: augmentation pipeline: 'description' must be a string", c->origin);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", json_string_value(name));
    p->dims = 3;
    json_t *dims = json_object_get(root, "dims");
    if (dims) {
        if (!json_is_integer(dims) || (json_integer_value(dims) != 2 && json_integer_value(dims) != 3))
            return BAD(c, "%s: augmentation pipeline: 'dims' must be 2 or 3", c->origin);
        p->dims = (int)json_integer_value(dims);
    }
    json_t *ops = json_object_get(root, "ops");
    if (!json_is_array(ops))
        return BAD(c, "%s: augmentation pipeline: 'ops' (an array, possibly empty) is required", c->origin);
    for (size_t i = 0; i < json_array_size(ops); i++) TRY(parse_op(c, json_array_get(ops, i), (int)i, p));
    return CD_OK;
}

cd_status cd_aug_pipeline_parse(const char *json, const char *origin, cd_aug_pipeline **out, cd_error *err) {
    if (!json || !out) return cd_fail(err, CD_ERR_ARG, "cd_aug_pipeline_parse: NULL argument");
    *out = NULL;
    if (!origin) origin = "augmentation pipeline";
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return cd_fail(err, CD_ERR_FORMAT, "%s: invalid JSON at line %d: %s", origin, jerr.line, jerr.text);
    cd_aug_pipeline *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(root);
        return cd_fail(err, CD_ERR_NOMEM, "out of memory");
    }
    parse_ctx c = {origin, err};
    cd_status st = parse_obj(&c, root, p);
    json_decref(root);
    if (st != CD_OK) {
        free(p);
        return st;
    }
    *out = p;
    return CD_OK;
}

cd_status cd_aug_pipeline_load(const char *name_or_path, cd_aug_pipeline **out, cd_error *err) {
    if (!name_or_path || !out) return cd_fail(err, CD_ERR_ARG, "cd_aug_pipeline_load: NULL argument");
    *out = NULL;
    for (int i = 0; builtin_names[i]; i++)
        if (!strcmp(builtin_names[i], name_or_path)) {
            cd_aug_pipeline *p = calloc(1, sizeof *p);
            if (!p) return cd_fail(err, CD_ERR_NOMEM, "out of memory");
            cd_status st = builtin(name_or_path, p, err);
            if (st != CD_OK) {
                free(p);
                return st;
            }
            *out = p;
            return CD_OK;
        }
    if (access(name_or_path, F_OK) != 0 && !strchr(name_or_path, '/') && !strstr(name_or_path, ".json")) {
        cd_aug_pipeline tmp;
        return builtin(name_or_path, &tmp, err); /* reports the list of built-ins */
    }
    char *buf;
    cd_status st = cd_read_text_file(name_or_path, 0, "augmentation pipeline", &buf, err);
    if (st != CD_OK) return st;
    st = cd_aug_pipeline_parse(buf, name_or_path, out, err);
    free(buf);
    return st;
}

void cd_aug_pipeline_destroy(cd_aug_pipeline *p) { free(p); }

bool cd_aug_pipeline_is_2d(const cd_aug_pipeline *p) { return p && p->dims == 2; }

static json_t *pair(const double v[2]) {
    json_t *a = json_array();
    json_array_append_new(a, json_real(v[0]));
    json_array_append_new(a, json_real(v[1]));
    return a;
}

static json_t *axes_str(const bool axes[3]) {
    char s[4];
    int n = 0;
    for (int i = 0; i < 3; i++)
        if (axes[i]) s[n++] = "xyz"[i];
    s[n] = '\0';
    return json_string(s);
}

char *cd_aug_pipeline_to_json(const cd_aug_pipeline *p) {
    if (!p) return NULL;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(p->name));
    json_object_set_new(o, "version", json_integer(1));
    json_object_set_new(o, "dims", json_integer(p->dims));
    json_t *ops = json_array();
    for (int k = 0; k < CD_AUG_NKINDS; k++) {
        const cd_aug_op *op = &p->ops[k];
        if (!op->present) continue;
        json_t *j = json_object();
        json_object_set_new(j, "op", json_string(cd_aug_kind_names[k]));
        json_object_set_new(j, "p", json_real(op->p));
        switch ((cd_aug_kind)k) {
        case CD_AUG_ROTATION:
            json_object_set_new(j, "range_deg", pair(op->range));
            json_object_set_new(j, "axes", axes_str(op->axes));
            break;
        case CD_AUG_ELASTIC:
            json_object_set_new(j, "alpha", pair(op->range));
            json_object_set_new(j, "sigma", pair(op->range2));
            break;
        case CD_AUG_NOISE: json_object_set_new(j, "sigma", pair(op->range)); break;
        case CD_AUG_BLUR:
            json_object_set_new(j, "sigma", pair(op->range));
            json_object_set_new(j, "p_per_channel", json_real(op->p_per_channel));
            json_object_set_new(j, "per_axis", json_boolean(op->per_axis));
            json_object_set_new(j, "truncate", json_real(op->truncate));
            break;
        case CD_AUG_LOWRES:
            json_object_set_new(j, "zoom", pair(op->range));
            json_object_set_new(j, "p_per_channel", json_real(op->p_per_channel));
            break;
        case CD_AUG_GAMMA:
            json_object_set_new(j, "range", pair(op->range));
            json_object_set_new(j, "invert_p", json_real(op->invert_p));
            break;
        case CD_AUG_MIRROR: json_object_set_new(j, "axes", axes_str(op->axes)); break;
        default: json_object_set_new(j, "range", pair(op->range)); break;
        }
        json_array_append_new(ops, j);
    }
    json_object_set_new(o, "ops", ops);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    return s;
}
