/* cirrdata/rng.h — counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
 *
 * Every random draw in libcirrdata is a pure function of a key and a counter, never of thread
 * timing: the loader keys a stream by (seed, epoch, sample, op), so results do not depend on the
 * number of threads, and the CPU and Vulkan paths can draw identical numbers.
 * A cd_rng is a small value type owned by the caller; not thread safe (use one per thread/stream). */
#ifndef CIRRDATA_RNG_H
#define CIRRDATA_RNG_H

#include "cirrdata/api.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The raw block function: 4 random 32-bit words from a 128-bit counter and a 64-bit key. */
CD_API void cd_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* n consecutive blocks: out[4 j + w] = word w of cd_philox4x32_10(counter + j, key) for j < n, where
 * counter + j adds j to the 64-bit position (counter[1] << 32 | counter[0], wrapping mod 2^64) and
 * keeps counter[2..3]. Bit-identical to n single calls; evaluated many blocks at a time in lane
 * loops the compiler vectorises. out holds 4 n words (caller-owned). */
CD_API void cd_philox4x32_10_blocks(const uint32_t counter[4], const uint32_t key[2], size_t n, uint32_t *out);

typedef struct cd_rng {
    uint32_t key[2];
    uint32_t counter[4]; /* counter[0..1]: position in the stream; counter[2..3]: stream id */
    uint32_t block[4];
    int used; /* words of block already handed out (4 = none left) */
} cd_rng;

/* A stream keyed by seed and identified by (stream_hi, stream_lo), e.g. (epoch, sample) or
 * (sample, op). Distinct (seed, stream) pairs give independent streams. */
CD_API void cd_rng_init(cd_rng *rng, uint64_t seed, uint32_t stream_hi, uint32_t stream_lo);

CD_API uint32_t cd_rng_u32(cd_rng *rng);
/* Uniform double in [0, 1) with 53 random bits. */
CD_API double cd_rng_uniform(cd_rng *rng);
/* Uniform double in [lo, hi). */
CD_API double cd_rng_range(cd_rng *rng, double lo, double hi);
/* Standard normal (Box-Muller on two uniforms; one value per call, deterministic). */
CD_API double cd_rng_normal(cd_rng *rng);
/* Uniform integer in [0, n) without modulo bias; n >= 1. */
CD_API uint64_t cd_rng_below(cd_rng *rng, uint64_t n);

#ifdef __cplusplus
}
#endif
#endif
