// What every intensity kernel of the augmentation engine shares (libcirrdata/augment/gpu_intensity.c):
// the push constants (its struct ipush), the size of a sample's record in the meta buffer and the op
// flags in the record's first word (gpu_aug.h's CD_GPU_I_*). Rows are sample x channel.
layout(push_constant) uniform Push {
    uint groups_x, count, npatch, channels, nx, ny, nz, cur, oth, op, mode, slot, parts, stats, rows, pad;
} pc;

const uint SAMPLE_WORDS = 32u;
const uint FLAG_NOISE = 1u, FLAG_BLUR = 2u, FLAG_BRIGHTNESS = 4u, FLAG_CONTRAST = 8u, FLAG_LOWRES = 16u,
           FLAG_GAMMA_INVERT = 32u, FLAG_GAMMA = 64u;
