/* Copying records from shard to shard as they are stored (internal): merge lays out the records of a
 * conversion's parts in new shards without decoding or compressing anything again. */
#ifndef CD_SHARD_RECORD_COPY_H
#define CD_SHARD_RECORD_COPY_H

#include "cirrdata/shard.h"
#include "core/internal.h"

/* Bytes record i (< cd_shard_record_count) takes in its shard: what cd_record_builder_size said of it
 * when it was appended (header and chunks, each 4 KiB aligned). */
CD_INTERNAL uint64_t cd_shard_record_bytes(const cd_shard *s, uint64_t i);

/* A builder holding record r of s as stored: its metadata, tensors and every chunk's stored bytes, each
 * chunk's checksum verified (CD_ERR_CORRUPT naming the shard, record and chunk). Appending it to a writer
 * writes the record's bytes again, with the offsets and record number of its new place. The caller owns
 * *out (cd_record_builder_destroy). */
CD_INTERNAL cd_status cd_record_builder_copy(const cd_shard *s, const cd_record *r, cd_record_builder **out,
                                             cd_error *err);

#endif
