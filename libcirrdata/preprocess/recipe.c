/* Recipes: presets, JSON parsing with strict validation, canonical JSON output. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cirrdata/recipe.h"
#include "core/internal.h"
#include "core/json_check.h"
#include "io/file.h"

static const char *const preset_names[] = {"raw", "nnunet-3d", "synergynet-3d", "cirrhosisstage-2d", NULL};

const char *const *cd_recipe_preset_names(void) { return preset_names; }

static void defaults(cd_recipe *r, const char *name) {
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->reorient = true;
    r->image_order = 1;
    r->mask_order = 0;
    r->anisotropy_threshold = 3.0;
    r->percentiles[0] = 0.5;
    r->percentiles[1] = 99.5;
    r->range[0] = 0.0;
    r->range[1] = 1.0;
    r->slice_channels = 1;
    r->chunk[0] = r->chunk[1] = r->chunk[2] = 64;
    r->zstd_level = 3;
}

cd_status cd_recipe_preset(const char *name, cd_recipe *r, cd_error *err) {
    if (!name || !r) return cd_fail(err, CD_ERR_ARG, "cd_recipe_preset: NULL argument");
    defaults(r, name);
    if (!strcmp(name, "raw")) return CD_OK;
    if (!strcmp(name, "nnunet-3d")) {
        r->resample = CD_RESAMPLE_MEDIAN_SPACING;
        r->image_order = 3;
        r->mask_order = 1;
        r->separate_z = CD_SEPARATE_Z_AUTO; /* nnU-Net: order 3 in-plane, 0 along the coarse axis */
        r->crop = CD_CROP_NONZERO;
        r->normalize = CD_NORM_ZSCORE;
        r->region = CD_REGION_NONZERO;
        r->dtype = CD_DTYPE_FLOAT32;
        return CD_OK;
    }
    if (!strcmp(name, "synergynet-3d")) {
        r->resample = CD_RESAMPLE_SHAPE;
        r->shape[0] = 256;
        r->shape[1] = 256;
        r->shape[2] = 80;
        r->image_order = 0; /* the dataset paper resized images with nearest neighbour too */
        r->normalize = CD_NORM_ZSCORE;
        r->region = CD_REGION_VOLUME;
        r->dtype = CD_DTYPE_FLOAT32;
        return CD_OK;
    }
    if (!strcmp(name, "cirrhosisstage-2d")) {
        r->resample = CD_RESAMPLE_SHAPE;
        r->shape[0] = 256;
        r->shape[1] = 256;
        r->shape[2] = 0;
        r->image_order = 1;
        r->normalize = CD_NORM_PERCENTILE;
        r->region = CD_REGION_VOLUME;
        r->has_then = true; /* torchvision Normalize(mean=0.5, std=0.5) */
        r->then_mean = 0.5;
        r->then_std = 0.5;
        r->slices = true;
        r->slice_channels = 3;
        r->dtype = CD_DTYPE_FLOAT16;
        r->chunk[0] = 256;
        r->chunk[1] = 256;
        r->chunk[2] = 1;
        return CD_OK;
    }
    char list[128] = "";
    for (int i = 0; preset_names[i]; i++) {
        strcat(list, i ? ", " : "");
        strcat(list, preset_names[i]);
    }
    return cd_fail(err, CD_ERR_ARG, "unknown recipe '%s' (presets: %s; or a .json file)", name, list);
}

/* ---- parsing ---- */

typedef struct parse_ctx {
    const char *origin;
    cd_error *err;
} parse_ctx;

#define BAD(ctx, ...) cd_fail((ctx)->err, CD_ERR_FORMAT, __VA_ARGS__)

static cd_status check_keys(parse_ctx *c, json_t *obj, const char *where, const char *const *allowed) {
    return cd_json_check_keys(obj, allowed, c->origin, "recipe", where, c->err);
}

static cd_status get_enum(parse_ctx *c, json_t *obj, const char *key, const char *const *names, int *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return CD_OK;
    if (json_is_string(v))
        for (int i = 0; names[i]; i++)
            if (!strcmp(names[i], json_string_value(v))) {
                *out = i;
                return CD_OK;
            }
    char list[160] = "";
    for (int i = 0; names[i]; i++) {
        strcat(list, i ? ", " : "");
        strcat(list, names[i]);
    }
    return BAD(c, "%s: recipe: '%s' must be one of %s", c->origin, key, list);
}

static cd_status get_number(parse_ctx *c, json_t *obj, const char *key, double lo, double hi, double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return CD_OK;
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return BAD(c, "%s: recipe: '%s' must be a number in [%g, %g]", c->origin, key, lo, hi);
    *out = json_number_value(v);
    return CD_OK;
}

static cd_status get_int(parse_ctx *c, json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return CD_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return BAD(c, "%s: recipe: '%s' must be an integer in [%lld, %lld]", c->origin, key, (long long)lo,
                   (long long)hi);
    *out = json_integer_value(v);
    return CD_OK;
}

static cd_status get_vec(parse_ctx *c, json_t *obj, const char *key, int n, bool integer, double lo, double hi,
                         double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return CD_OK;
    if (!json_is_array(v) || (int)json_array_size(v) != n)
        return BAD(c, "%s: recipe: '%s' must be an array of %d numbers", c->origin, key, n);
    for (int i = 0; i < n; i++) {
        json_t *e = json_array_get(v, (size_t)i);
        if (integer ? !json_is_integer(e) : !json_is_number(e))
            return BAD(c, "%s: recipe: '%s' must hold %s", c->origin, key, integer ? "integers" : "numbers");
        double d = json_number_value(e);
        if (!(d >= lo && d <= hi)) return BAD(c, "%s: recipe: '%s' values must be in [%g, %g]", c->origin, key, lo, hi);
        out[i] = d;
    }
    return CD_OK;
}

static const char *const resample_names[] = {"none", "spacing", "shape", "median-spacing", NULL};
static const char *const crop_names[] = {"none", "mask", "nonzero", NULL};
static const char *const norm_names[] = {"none", "zscore", "percentile", NULL};
static const char *const region_names[] = {"volume", "mask", "nonzero", NULL};
static const char *const dtype_names[] = {"auto", "float32", "float16", "int16", "uint8", NULL};
static const char *const non_finite_names[] = {"error", "zero", NULL}; /* by cd_non_finite value */
static const cd_dtype dtype_values[] = {CD_DTYPE_INVALID, CD_DTYPE_FLOAT32, CD_DTYPE_FLOAT16, CD_DTYPE_INT16,
                                        CD_DTYPE_UINT8};

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        cd_status st_ = (x);                                                                                           \
        if (st_ != CD_OK) return st_;                                                                                  \
    } while (0)

static cd_status parse_resample(parse_ctx *c, json_t *rs, cd_recipe *r) {
    static const char *const keys[] = {
        "mode", "spacing", "shape", "image_order", "mask_order", "anisotropy_threshold", "separate_z", "order_z", NULL};
    if (!json_is_object(rs) || !json_object_get(rs, "mode"))
        return BAD(c, "%s: recipe: 'resample' needs a 'mode'", c->origin);
    TRY(check_keys(c, rs, ".resample", keys));
    int e = 0;
    TRY(get_enum(c, rs, "mode", resample_names, &e));
    r->resample = (cd_resample_mode)e;
    double v[3] = {0, 0, 0};
    TRY(get_vec(c, rs, "spacing", 3, false, 1e-3, 1e3, v));
    memcpy(r->spacing, v, sizeof v);
    double s[3] = {0, 0, 0};
    TRY(get_vec(c, rs, "shape", 3, true, 0, 4096, s));
    for (int i = 0; i < 3; i++) r->shape[i] = (int64_t)s[i];
    int64_t io = 1, mo = 0;
    TRY(get_int(c, rs, "image_order", 0, 3, &io));
    TRY(get_int(c, rs, "mask_order", 0, 1, &mo));
    if (io == 2) return BAD(c, "%s: recipe: 'image_order' must be 0, 1 or 3", c->origin);
    r->image_order = (int)io;
    r->mask_order = (int)mo;
    TRY(get_number(c, rs, "anisotropy_threshold", 1, 1e6, &r->anisotropy_threshold));
    json_t *sz = json_object_get(rs, "separate_z");
    if (sz) {
        if (json_is_boolean(sz))
            r->separate_z = json_is_true(sz) ? CD_SEPARATE_Z_ON : CD_SEPARATE_Z_OFF;
        else if (json_is_string(sz) && !strcmp(json_string_value(sz), "auto"))
            r->separate_z = CD_SEPARATE_Z_AUTO;
        else
            return BAD(c, "%s: recipe: 'separate_z' must be \"auto\", true or false", c->origin);
    }
    int64_t oz = 0;
    TRY(get_int(c, rs, "order_z", 0, 1, &oz));
    r->order_z = (int)oz;
    if (r->resample == CD_RESAMPLE_SPACING && !json_object_get(rs, "spacing"))
        return BAD(c, "%s: recipe: resample mode 'spacing' needs 'spacing'", c->origin);
    if (r->resample == CD_RESAMPLE_SHAPE && (!json_object_get(rs, "shape") || r->shape[0] < 1 || r->shape[1] < 1))
        return BAD(c, "%s: recipe: resample mode 'shape' needs 'shape' (x and y >= 1)", c->origin);
    return CD_OK;
}

static cd_status parse_crop(parse_ctx *c, json_t *cr, cd_recipe *r) {
    static const char *const keys[] = {"mode", "margin", NULL};
    if (!json_is_object(cr) || !json_object_get(cr, "mode"))
        return BAD(c, "%s: recipe: 'crop' needs a 'mode'", c->origin);
    TRY(check_keys(c, cr, ".crop", keys));
    int e = 0;
    TRY(get_enum(c, cr, "mode", crop_names, &e));
    r->crop = (cd_crop_mode)e;
    double m[3] = {0, 0, 0};
    TRY(get_vec(c, cr, "margin", 3, true, 0, 4096, m));
    for (int i = 0; i < 3; i++) r->margin[i] = (int64_t)m[i];
    return CD_OK;
}

static cd_status parse_normalize(parse_ctx *c, json_t *no, cd_recipe *r) {
    static const char *const keys[] = {"mode", "region", "percentiles", "range", "then", NULL};
    if (!json_is_object(no) || !json_object_get(no, "mode"))
        return BAD(c, "%s: recipe: 'normalize' needs a 'mode'", c->origin);
    TRY(check_keys(c, no, ".normalize", keys));
    int e = 0;
    TRY(get_enum(c, no, "mode", norm_names, &e));
    r->normalize = (cd_norm_mode)e;
    e = 0;
    TRY(get_enum(c, no, "region", region_names, &e));
    r->region = (cd_norm_region)e;
    TRY(get_vec(c, no, "percentiles", 2, false, 0, 100, r->percentiles));
    if (!(r->percentiles[0] < r->percentiles[1])) return BAD(c, "%s: recipe: percentiles must increase", c->origin);
    TRY(get_vec(c, no, "range", 2, false, -1e30, 1e30, r->range));
    double t[2] = {0, 1};
    if (json_object_get(no, "then")) {
        TRY(get_vec(c, no, "then", 2, false, -1e30, 1e30, t));
        if (t[1] == 0) return BAD(c, "%s: recipe: 'then' std must be non-zero", c->origin);
        r->has_then = true;
        r->then_mean = t[0];
        r->then_std = t[1];
    }
    return CD_OK;
}

static cd_status parse_slices(parse_ctx *c, json_t *sl, cd_recipe *r) {
    static const char *const keys[] = {"channels", NULL};
    if (!json_is_object(sl)) return BAD(c, "%s: recipe: 'slices' must be an object", c->origin);
    TRY(check_keys(c, sl, ".slices", keys));
    int64_t ch = 1;
    TRY(get_int(c, sl, "channels", 1, 4, &ch));
    r->slices = true;
    r->slice_channels = (int)ch;
    return CD_OK;
}

/* How the result is stored: dtype, mask dtype, chunk, zstd level; and the non-finite policy. */
static cd_status parse_storage(parse_ctx *c, json_t *root, cd_recipe *r) {
    int e = 0;
    TRY(get_enum(c, root, "dtype", dtype_names, &e));
    r->dtype = dtype_values[e];
    json_t *md = json_object_get(root, "mask_dtype");
    if (md && (!json_is_string(md) || strcmp(json_string_value(md), "uint8")))
        return BAD(c, "%s: recipe: 'mask_dtype' must be \"uint8\"", c->origin);
    double ch[3] = {64, 64, 64};
    TRY(get_vec(c, root, "chunk", 3, true, 1, 1024, ch));
    for (int i = 0; i < 3; i++) r->chunk[i] = (uint32_t)ch[i];
    int64_t lvl = 3;
    TRY(get_int(c, root, "zstd_level", 1, 19, &lvl));
    r->zstd_level = (int)lvl;
    e = CD_NON_FINITE_ERROR;
    TRY(get_enum(c, root, "non_finite", non_finite_names, &e));
    r->non_finite = (cd_non_finite)e;
    return CD_OK;
}

static cd_status parse_obj(parse_ctx *c, json_t *root, cd_recipe *r) {
    static const char *const top[] = {"name",  "version",    "description", "reorient", "resample",
                                      "crop",  "normalize",  "slices",      "dtype",    "mask_dtype",
                                      "chunk", "zstd_level", "non_finite",  NULL};
    if (!json_is_object(root)) return BAD(c, "%s: a recipe must be a JSON object", c->origin);
    TRY(check_keys(c, root, "", top));
    json_t *name = json_object_get(root, "name"), *version = json_object_get(root, "version");
    if (!json_is_string(name) || json_string_length(name) < 1 || json_string_length(name) > 64)
        return BAD(c, "%s: recipe: 'name' (1..64 characters) is required", c->origin);
    if (!json_is_integer(version) || json_integer_value(version) != 1)
        return BAD(c, "%s: recipe: 'version' must be 1", c->origin);
    defaults(r, json_string_value(name));
    static const char *const reorient_names[] = {"none", "RAS", NULL};
    int e = 1;
    TRY(get_enum(c, root, "reorient", reorient_names, &e));
    r->reorient = e == 1;
    json_t *rs = json_object_get(root, "resample"), *cr = json_object_get(root, "crop"),
           *no = json_object_get(root, "normalize"), *sl = json_object_get(root, "slices");
    if (rs) TRY(parse_resample(c, rs, r));
    if (cr) TRY(parse_crop(c, cr, r));
    if (no) TRY(parse_normalize(c, no, r));
    if (sl) TRY(parse_slices(c, sl, r));
    TRY(parse_storage(c, root, r));
    if (r->slices) {
        r->chunk[2] = 1; /* one chunk per slice: a slice read touches one chunk per x/y block */
        if (r->resample == CD_RESAMPLE_MEDIAN_SPACING)
            return BAD(c, "%s: recipe: 2D slice recipes cannot use median-spacing", c->origin);
    }
    return CD_OK;
}

cd_status cd_recipe_parse(const char *json, const char *origin, cd_recipe *out, cd_error *err) {
    if (!json || !out) return cd_fail(err, CD_ERR_ARG, "cd_recipe_parse: NULL argument");
    if (!origin) origin = "recipe";
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return cd_fail(err, CD_ERR_FORMAT, "%s: invalid JSON at line %d: %s", origin, jerr.line, jerr.text);
    parse_ctx c = {origin, err};
    cd_recipe r;
    cd_status st = parse_obj(&c, root, &r);
    json_decref(root);
    if (st == CD_OK) *out = r;
    return st;
}

cd_status cd_recipe_load(const char *name_or_path, cd_recipe *out, cd_error *err) {
    if (!name_or_path || !out) return cd_fail(err, CD_ERR_ARG, "cd_recipe_load: NULL argument");
    for (int i = 0; preset_names[i]; i++)
        if (!strcmp(preset_names[i], name_or_path)) return cd_recipe_preset(name_or_path, out, err);
    if (access(name_or_path, F_OK) != 0 && !strchr(name_or_path, '/') && !strstr(name_or_path, ".json"))
        return cd_recipe_preset(name_or_path, out, err); /* reports the preset list */
    char *buf;
    cd_status st = cd_read_text_file(name_or_path, 0, "recipe", &buf, err);
    if (st != CD_OK) return st;
    st = cd_recipe_parse(buf, name_or_path, out, err);
    free(buf);
    return st;
}

static json_t *vec_real(const double *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static json_t *vec_int(const int64_t *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static const char *dtype_label(cd_dtype d) {
    for (int i = 0; dtype_names[i]; i++)
        if (dtype_values[i] == d) return dtype_names[i];
    return "auto";
}

char *cd_recipe_to_json(const cd_recipe *r) {
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(r->name));
    json_object_set_new(o, "version", json_integer(1));
    json_object_set_new(o, "reorient", json_string(r->reorient ? "RAS" : "none"));
    json_t *rs = json_object();
    json_object_set_new(rs, "mode", json_string(resample_names[r->resample]));
    if (r->resample == CD_RESAMPLE_SPACING) json_object_set_new(rs, "spacing", vec_real(r->spacing, 3));
    if (r->resample == CD_RESAMPLE_SHAPE) json_object_set_new(rs, "shape", vec_int(r->shape, 3));
    json_object_set_new(rs, "image_order", json_integer(r->image_order));
    json_object_set_new(rs, "mask_order", json_integer(r->mask_order));
    json_object_set_new(rs, "anisotropy_threshold", json_real(r->anisotropy_threshold));
    json_object_set_new(rs, "separate_z",
                        r->separate_z == CD_SEPARATE_Z_AUTO ? json_string("auto")
                                                            : json_boolean(r->separate_z == CD_SEPARATE_Z_ON));
    json_object_set_new(rs, "order_z", json_integer(r->order_z));
    json_object_set_new(o, "resample", rs);
    json_t *cr = json_object();
    json_object_set_new(cr, "mode", json_string(crop_names[r->crop]));
    json_object_set_new(cr, "margin", vec_int(r->margin, 3));
    json_object_set_new(o, "crop", cr);
    json_t *no = json_object();
    json_object_set_new(no, "mode", json_string(norm_names[r->normalize]));
    json_object_set_new(no, "region", json_string(region_names[r->region]));
    json_object_set_new(no, "percentiles", vec_real(r->percentiles, 2));
    json_object_set_new(no, "range", vec_real(r->range, 2));
    if (r->has_then) {
        double t[2] = {r->then_mean, r->then_std};
        json_object_set_new(no, "then", vec_real(t, 2));
    }
    json_object_set_new(o, "normalize", no);
    if (r->slices) {
        json_t *sl = json_object();
        json_object_set_new(sl, "channels", json_integer(r->slice_channels));
        json_object_set_new(o, "slices", sl);
    }
    json_object_set_new(o, "dtype", json_string(dtype_label(r->dtype)));
    json_object_set_new(o, "mask_dtype", json_string("uint8"));
    int64_t ch[3] = {r->chunk[0], r->chunk[1], r->chunk[2]};
    json_object_set_new(o, "chunk", vec_int(ch, 3));
    json_object_set_new(o, "zstd_level", json_integer(r->zstd_level));
    if (r->non_finite != CD_NON_FINITE_ERROR)
        json_object_set_new(o, "non_finite", json_string(non_finite_names[r->non_finite]));
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    return s;
}
