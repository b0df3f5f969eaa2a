/* Reading NIfTI volumes: file resolution (.nii, .nii.gz, .hdr/.img pairs), header, voxels.
 * We do the I/O and the inflate ourselves (whole-buffer libdeflate when sizes are known and agree)
 * because that is where the time goes; niftilib is used for its structs and byte swapping. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cirrdata/nifti.h"
#include "core/volume_impl.h"
#include "io/file.h"
#include "io/gzip_reader.h"
#include "io/nifti_header.h"

#define PATH_CAP 4096

/* The one or two files behind a NIfTI path. */
typedef struct nifti_files {
    char header_path[PATH_CAP];
    char data_path[PATH_CAP];
    bool pair;
    bool data_found;
} nifti_files;

static bool file_exists(const char *p) { return access(p, F_OK) == 0; }

/* dst = src with its last len_suffix chars replaced by the first candidate that exists (else by
 * the first candidate); returns whether one existed. */
static bool pick_sibling(const char *src, size_t len_suffix, const char *const *cands, size_t ncand, char *dst) {
    int base = (int)(strlen(src) - len_suffix);
    for (size_t i = 0; i < ncand; i++) {
        snprintf(dst, PATH_CAP, "%.*s%s", base, src, cands[i]);
        if (file_exists(dst)) return true;
    }
    snprintf(dst, PATH_CAP, "%.*s%s", base, src, cands[0]);
    return false;
}

static cd_status resolve_files(const char *path, nifti_files *f, cd_error *err) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= PATH_CAP - 8) return cd_fail(err, CD_ERR_ARG, "%.200s...: path too long", path);
    static const char *const img[] = {".img", ".img.gz"}, *const img_gz[] = {".img.gz", ".img"};
    static const char *const hdr[] = {".hdr", ".hdr.gz"}, *const hdr_gz[] = {".hdr.gz", ".hdr"};
    if (cd_path_has_suffix(path, ".hdr") || cd_path_has_suffix(path, ".hdr.gz")) {
        bool gz = cd_path_has_suffix(path, ".gz");
        f->pair = true;
        snprintf(f->header_path, PATH_CAP, "%s", path);
        f->data_found = pick_sibling(path, gz ? 7 : 4, gz ? img_gz : img, 2, f->data_path);
    } else if (cd_path_has_suffix(path, ".img") || cd_path_has_suffix(path, ".img.gz")) {
        bool gz = cd_path_has_suffix(path, ".gz");
        f->pair = true;
        snprintf(f->data_path, PATH_CAP, "%s", path);
        f->data_found = file_exists(path);
        if (!pick_sibling(path, gz ? 7 : 4, gz ? hdr_gz : hdr, 2, f->header_path))
            return cd_fail(err, CD_ERR_IO, "%s: the header file of this pair (%s) is missing", path, f->header_path);
    } else {
        snprintf(f->header_path, PATH_CAP, "%s", path);
        snprintf(f->data_path, PATH_CAP, "%s", path);
        f->data_found = true;
    }
    return CD_OK;
}

/* A file's bytes: either in memory (gzip, read whole) or only opened (raw, read with pread). */
typedef struct source {
    cd_file file;
    bool gz;
    uint8_t *bytes; /* whole file, when gz */
    size_t len;
} source;

static void source_close(source *s) {
    if (s->bytes) cd_buffer_free(s->bytes, s->len);
    s->bytes = NULL;
    cd_file_close(&s->file);
}

static cd_status source_open(const char *path, const cd_nifti_caps *caps, source *s, cd_error *err) {
    memset(s, 0, sizeof *s);
    s->file.fd = -1;
    cd_status st = cd_file_open(path, &s->file, err);
    if (st != CD_OK) return st;
    if (s->file.size == 0) {
        cd_file_close(&s->file);
        return cd_fail(err, CD_ERR_TRUNCATED, "%s: empty file", path);
    }
    uint8_t magic[2] = {0, 0};
    size_t got;
    st = cd_file_pread_some(&s->file, magic, 2, 0, &got, err);
    if (st == CD_OK && cd_gzip_is_gzip(magic, got)) {
        s->gz = true;
        void *buf = NULL;
        if (s->file.size > caps->max_bytes) {
            char a[32], c[160];
            st = cd_fail(err, CD_ERR_LIMIT, "%s: the compressed file of %s is above %s", path,
                         cd_format_bytes(s->file.size, a, sizeof a), cd_nifti_bytes_cap_text(caps, c, sizeof c));
        } else {
            st = cd_file_read_all(&s->file, caps->max_bytes, &buf, &s->len, err);
        }
        if (st == CD_OK) s->bytes = buf;
    }
    if (st != CD_OK) source_close(s);
    return st;
}

/* The first bytes of a source (inflated if gzip), enough for either header version. */
static cd_status source_prefix(source *s, uint8_t *buf, size_t want, size_t *got, cd_error *err) {
    if (s->gz) return cd_gzip_inflate(s->file.path, s->bytes, s->len, buf, want, UINT64_MAX, true, got, err);
    return cd_file_pread_some(&s->file, buf, want, 0, got, err);
}

static cd_status read_header_from(const nifti_files *f, source *hs, const cd_nifti_caps *caps, cd_nifti_header *hdr,
                                  cd_error *err) {
    uint8_t buf[CD_NIFTI2_HEADER_SIZE];
    size_t got = 0;
    cd_status st = source_prefix(hs, buf, sizeof buf, &got, err);
    if (st != CD_OK) return st;
    st = cd_nifti_parse_header(f->header_path, buf, got, f->pair, caps, hdr, err);
    if (st == CD_OK) hdr->compressed = hs->gz;
    return st;
}

cd_status cd_nifti_read_header(const char *path, cd_nifti_header *hdr, cd_error *err) {
    if (!path || !hdr) return cd_fail(err, CD_ERR_ARG, "cd_nifti_read_header: NULL argument");
    nifti_files f;
    cd_status st = resolve_files(path, &f, err);
    if (st != CD_OK) return st;
    cd_nifti_caps caps;
    if ((st = cd_nifti_caps_resolve(0, &caps, err)) != CD_OK) return st;
    source hs;
    st = source_open(f.header_path, &caps, &hs, err);
    if (st != CD_OK) return st;
    st = read_header_from(&f, &hs, &caps, hdr, err);
    if (st == CD_OK && f.pair && f.data_found) {
        /* For pairs, "compressed" describes the image file. */
        uint8_t m[2] = {0, 0};
        size_t got = 0;
        cd_file df;
        if (cd_file_open(f.data_path, &df, NULL) == CD_OK) {
            if (cd_file_pread_some(&df, m, 2, 0, &got, NULL) == CD_OK) hdr->compressed = cd_gzip_is_gzip(m, got);
            cd_file_close(&df);
        }
    }
    source_close(&hs);
    return st;
}

static void byteswap_inplace(void *data, size_t count, size_t esize) {
    switch (esize) {
    case 2: {
        uint16_t *p = data;
        for (size_t i = 0; i < count; i++) p[i] = __builtin_bswap16(p[i]);
        break;
    }
    case 4: {
        uint32_t *p = data;
        for (size_t i = 0; i < count; i++) p[i] = __builtin_bswap32(p[i]);
        break;
    }
    case 8: {
        uint64_t *p = data;
        for (size_t i = 0; i < count; i++) p[i] = __builtin_bswap64(p[i]);
        break;
    }
    default: break;
    }
}

/* Reads volume `vol_index` from the data source into a fresh buffer; buffer, alloc and offset describe
 * where the voxels ended up. */
static cd_status read_voxels(const char *data_path, source *ds, const cd_nifti_header *h, int64_t vol_index,
                             const cd_nifti_caps *caps, void **buffer, size_t *alloc, size_t *offset, cd_error *err) {
    char a[32], b[160];
    const uint64_t max_bytes = caps->max_bytes;
    const uint64_t vol_bytes = h->volume_bytes;
    const uint64_t start =
        (uint64_t)h->vox_offset + (uint64_t)vol_index * vol_bytes; /* cannot overflow: bounded below */
    uint64_t total;                                                /* end of all the data */
    if (__builtin_mul_overflow((uint64_t)h->nvolumes, vol_bytes, &total) ||
        __builtin_add_overflow(total, (uint64_t)h->vox_offset, &total))
        return cd_fail(err, CD_ERR_LIMIT, "%s: data size overflows", data_path);

    if (!ds->gz) {
        if (ds->file.size < total)
            return cd_fail(err, CD_ERR_TRUNCATED,
                           "%s: truncated: file has %llu bytes, the header needs %llu (%lld volume%s at offset %lld)",
                           data_path, (unsigned long long)ds->file.size, (unsigned long long)total,
                           (long long)h->nvolumes, h->nvolumes == 1 ? "" : "s", (long long)h->vox_offset);
        void *buf = cd_buffer_alloc((size_t)vol_bytes);
        if (!buf)
            return cd_fail(err, CD_ERR_NOMEM, "%s: cannot allocate %s", data_path,
                           cd_format_bytes(vol_bytes, a, sizeof a));
        cd_status st = cd_file_pread_exact(&ds->file, buf, (size_t)vol_bytes, start, err);
        if (st != CD_OK) {
            cd_buffer_free(buf, (size_t)vol_bytes);
            return st;
        }
        *buffer = buf;
        *alloc = (size_t)vol_bytes;
        *offset = 0;
        return CD_OK;
    }

    /* gzip: the header's claim must be something the compressed bytes could possibly hold. */
    if (total > cd_gzip_max_inflated(ds->len))
        return cd_fail(err, CD_ERR_TRUNCATED,
                       "%s: truncated or hostile: %s of compressed data cannot hold the %s the header describes",
                       data_path, cd_format_bytes(ds->len, a, sizeof a), cd_format_bytes(total, b, sizeof b));
    const uint64_t need = start + vol_bytes;
    const uint64_t want = (total <= max_bytes) ? total : need;
    if (want > max_bytes)
        return cd_fail(err, CD_ERR_LIMIT, "%s: reading volume %lld needs %s of inflated data, above %s", data_path,
                       (long long)vol_index, cd_format_bytes(want, a, sizeof a),
                       cd_nifti_bytes_cap_text(caps, b, sizeof b));
    uint8_t *buf = cd_buffer_alloc((size_t)want);
    if (!buf)
        return cd_fail(err, CD_ERR_NOMEM, "%s: cannot allocate %s", data_path, cd_format_bytes(want, a, sizeof a));
    cd_status st = cd_gzip_inflate(data_path, ds->bytes, ds->len, buf, (size_t)want, total, false, NULL, err);
    if (st != CD_OK) {
        cd_buffer_free(buf, (size_t)want);
        return st;
    }
    size_t esize = cd_dtype_size(h->dtype);
    if (h->nvolumes > 1 || start % esize != 0) {
        /* Keep only the requested volume, at an aligned address. */
        void *one = cd_buffer_alloc((size_t)vol_bytes);
        if (!one) {
            cd_buffer_free(buf, (size_t)want);
            return cd_fail(err, CD_ERR_NOMEM, "%s: cannot allocate %s", data_path,
                           cd_format_bytes(vol_bytes, a, sizeof a));
        }
        memcpy(one, buf + start, (size_t)vol_bytes);
        cd_buffer_free(buf, (size_t)want);
        *buffer = one;
        *alloc = (size_t)vol_bytes;
        *offset = 0;
    } else {
        *buffer = buf;
        *alloc = (size_t)want;
        *offset = (size_t)start;
    }
    return CD_OK;
}

void cd_nifti_read_options_init(cd_nifti_read_options *o) { memset(o, 0, sizeof *o); }

/* The first steps of every read: the caps, the files, the header (its datatype must be one we read).
 * On success *hs is open on the header file (for single files, also the data). */
static cd_status open_header(const char *path, const cd_nifti_read_options *opts, cd_nifti_caps *caps, nifti_files *f,
                             source *hs, cd_nifti_header *h, cd_error *err) {
    cd_status st = cd_nifti_caps_resolve(opts->max_bytes, caps, err);
    if (st != CD_OK) return st;
    st = resolve_files(path, f, err);
    if (st != CD_OK) return st;
    if (f->pair && !f->data_found)
        return cd_fail(err, CD_ERR_IO, "%s: the image file of this pair (%s) is missing", path, f->data_path);
    st = source_open(f->header_path, caps, hs, err);
    if (st != CD_OK) return st;
    st = read_header_from(f, hs, caps, h, err);
    if (st == CD_OK && h->dtype == CD_DTYPE_INVALID)
        st = cd_fail(err, CD_ERR_UNSUPPORTED, "%s: unsupported datatype %d (%s)", path, h->datatype,
                     cd_nifti_datatype_label(h->datatype));
    if (st != CD_OK) source_close(hs);
    return st;
}

/* The source of the voxels: hs itself for single files; for pairs, hs is closed and ds opened. On
 * failure nothing is left open. */
static cd_status open_data(const nifti_files *f, const cd_nifti_caps *caps, source *hs, source *ds, source **data,
                           cd_nifti_header *h, cd_error *err) {
    *data = hs;
    if (f->pair) {
        source_close(hs);
        cd_status st = source_open(f->data_path, caps, ds, err);
        if (st != CD_OK) return st;
        *data = ds;
    }
    h->compressed = (*data)->gz;
    return CD_OK;
}

cd_status cd_nifti_read(const char *path, const cd_nifti_read_options *opts, cd_volume **out, cd_nifti_header *hdr_out,
                        cd_error *err) {
    if (!path || !out) return cd_fail(err, CD_ERR_ARG, "cd_nifti_read: NULL argument");
    *out = NULL;
    cd_nifti_read_options defaults;
    cd_nifti_read_options_init(&defaults);
    if (!opts) opts = &defaults;
    cd_nifti_caps caps;
    nifti_files f;
    source hs, ds, *data_src;
    cd_nifti_header h;
    cd_status st = open_header(path, opts, &caps, &f, &hs, &h, err);
    if (st != CD_OK) return st;
    if (opts->volume < 0 || opts->volume >= h.nvolumes) {
        source_close(&hs);
        return cd_fail(err, CD_ERR_ARG, "%s: volume %lld does not exist (the file has %lld)", path,
                       (long long)opts->volume, (long long)h.nvolumes);
    }
    st = open_data(&f, &caps, &hs, &ds, &data_src, &h, err);
    if (st != CD_OK) return st;

    void *buffer = NULL;
    size_t alloc = 0, offset = 0;
    st = read_voxels(f.data_path, data_src, &h, opts->volume, &caps, &buffer, &alloc, &offset, err);
    source_close(data_src);
    if (st != CD_OK) return st;

    const int64_t dims[3] = {h.dim[1], h.dim[2], h.dim[3]};
    cd_volume *v;
    st = cd_volume_wrap_buffer(buffer, alloc, offset, dims, h.dtype, &v, err);
    if (st != CD_OK) return st;
    bool little_host = (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);
    if (h.big_endian == little_host) byteswap_inplace(v->data, v->count, cd_dtype_size(h.dtype));
    memcpy(v->affine, h.affine, sizeof v->affine);
    for (int i = 0; i < 3; i++) v->spacing[i] = (i < h.ndim) ? h.pixdim[i + 1] : 1.0;
    cd_volume_set_scaling(v, h.scl_slope, h.scl_inter);
    *out = v;
    if (hdr_out) *hdr_out = h;
    return CD_OK;
}

/* cd_nifti_read_all's work on an open data source: the sizes, checked against the file and the caps,
 * then (dst given) the voxels of every volume. */
static cd_status read_all_voxels(const char *data_path, source *ds, const cd_nifti_header *h, const cd_nifti_caps *caps,
                                 uint8_t *dst, size_t dst_bytes, size_t *need, size_t *data_offset, cd_error *err) {
    char a[32], b[160];
    uint64_t data_bytes, total; /* the voxels of all volumes; the end of them in the (inflated) data file */
    if (__builtin_mul_overflow((uint64_t)h->nvolumes, h->volume_bytes, &data_bytes) ||
        __builtin_add_overflow(data_bytes, (uint64_t)h->vox_offset, &total))
        return cd_fail(err, CD_ERR_LIMIT, "%s: data size overflows", data_path);
    /* Raw files are read from vox_offset on; gzip streams are inflated from their start, header included. */
    const uint64_t want = ds->gz ? total : data_bytes;
    if (want > caps->max_bytes)
        return cd_fail(err, CD_ERR_LIMIT, "%s: reading all %lld volume%s needs %s%s, above %s", data_path,
                       (long long)h->nvolumes, h->nvolumes == 1 ? "" : "s", cd_format_bytes(want, a, sizeof a),
                       ds->gz ? " of inflated data" : "", cd_nifti_bytes_cap_text(caps, b, sizeof b));
    if (!ds->gz && ds->file.size < total)
        return cd_fail(err, CD_ERR_TRUNCATED,
                       "%s: truncated: file has %llu bytes, the header needs %llu (%lld volume%s at offset %lld)",
                       data_path, (unsigned long long)ds->file.size, (unsigned long long)total, (long long)h->nvolumes,
                       h->nvolumes == 1 ? "" : "s", (long long)h->vox_offset);
    if (ds->gz && total > cd_gzip_max_inflated(ds->len))
        return cd_fail(err, CD_ERR_TRUNCATED,
                       "%s: truncated or hostile: %s of compressed data cannot hold the %s the header describes",
                       data_path, cd_format_bytes(ds->len, a, sizeof a), cd_format_bytes(total, b, sizeof b));
    *need = (size_t)want; /* fits: max_bytes <= SIZE_MAX / 2 (cirrdata/limits.h) */
    if (!dst) return CD_OK;
    if (dst_bytes < *need)
        return cd_fail(err, CD_ERR_ARG, "%s: the buffer of %zu bytes is smaller than the %zu bytes this file needs",
                       data_path, dst_bytes, *need);
    cd_status st;
    size_t off = 0;
    if (!ds->gz) {
        st = cd_file_pread_exact(&ds->file, dst, (size_t)data_bytes, (uint64_t)h->vox_offset, err);
    } else {
        /* Straight into dst: no temporary buffer, no copy. The voxels stay where they are in the
         * stream unless that address would not be aligned to their element size. */
        st = cd_gzip_inflate(data_path, ds->bytes, ds->len, dst, (size_t)total, total, false, NULL, err);
        off = (size_t)h->vox_offset;
        if (st == CD_OK && off % cd_dtype_size(h->dtype) != 0) {
            memmove(dst, dst + off, (size_t)data_bytes);
            off = 0;
        }
    }
    if (st != CD_OK) return st;
    bool little_host = (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);
    size_t esize = cd_dtype_size(h->dtype);
    if (h->big_endian == little_host) byteswap_inplace(dst + off, (size_t)data_bytes / esize, esize);
    *data_offset = off;
    return CD_OK;
}

cd_status cd_nifti_read_all(const char *path, const cd_nifti_read_options *opts, void *dst, size_t dst_bytes,
                            size_t *need, size_t *data_offset, cd_nifti_header *hdr_out, cd_error *err) {
    if (!path || !need || (dst && !data_offset)) return cd_fail(err, CD_ERR_ARG, "cd_nifti_read_all: NULL argument");
    *need = 0;
    if (data_offset) *data_offset = 0;
    cd_nifti_read_options defaults;
    cd_nifti_read_options_init(&defaults);
    if (!opts) opts = &defaults;
    cd_nifti_caps caps;
    nifti_files f;
    source hs, ds, *data_src;
    cd_nifti_header h;
    cd_status st = open_header(path, opts, &caps, &f, &hs, &h, err);
    if (st != CD_OK) return st;
    st = open_data(&f, &caps, &hs, &ds, &data_src, &h, err);
    if (st != CD_OK) return st;
    st = read_all_voxels(f.data_path, data_src, &h, &caps, dst, dst_bytes, need, data_offset, err);
    source_close(data_src);
    if (st == CD_OK && hdr_out) *hdr_out = h;
    return st;
}
