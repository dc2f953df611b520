// AMX tile microkernels of moehal-cpu (x86-64 only; compiled by build.rs with -mamx-tile -mamx-bf16
// -mamx-int8). Callers are the safe wrappers in src/simd/amx.rs, which check every bound below and
// call these only after CPUID and arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) succeeded.
//
// One call computes a block of up to 32x32 outputs with the 2x2 tile blocking of Intel's optimization
// manual (tiles 0-1: A, 2-3: B, 4-7: C): per K step, two A tiles (16 rows x 64 bytes each, rows `lda`
// bytes apart), two B tiles in VNNI order (16 rows of 64 bytes: bf16 pairs or int8 quads, rows `ldb`
// bytes apart) and four tile dot products. `mt`/`nt` (1 or 2) say how many 16-row A tiles and 16-column
// B tiles take part; C tiles outside them are neither computed nor stored. K step kb reads A at
// `a + kb*64` and B tile j at `b + kb*bk + j*bj` (bytes). C (f32 or i32) is written row-major with
// `ldc` bytes between rows; the old contents of C are ignored. `pfd` > 0 prefetches the A rows `pfd` K
// steps ahead (a hint for A streamed from memory, as the in-place weights of the NK orientation are;
// never past the last K step). `nx`/`nx_lines` (0: none) name memory the caller will read next (the
// following task's weights): its lines are prefetched into L2, spread evenly over the K steps.
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) moehal_tilecfg;

static void config(void) {
    moehal_tilecfg c __attribute__((aligned(64)));
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) {
        c.rows[i] = 16;
        c.colsb[i] = 64;
    }
    _tile_loadconfig(&c);
}

// Prefetch the 16*mt A rows of K step kb + pfd into L1 (when pfd > 0 and that step exists).
#define PREFETCH_A(kb)                                                                                  \
    do {                                                                                                \
        if (pfd && (kb) + pfd < kblocks) {                                                              \
            const uint8_t *p_ = a + ((kb) + pfd) * 64;                                                  \
            for (int i_ = 0; i_ < 16 * mt; i_++) _mm_prefetch((const char *)(p_ + i_ * lda), _MM_HINT_T0); \
        }                                                                                               \
    } while (0)

// Prefetch lines [kb*nx_lines/kblocks, (kb+1)*nx_lines/kblocks) of `nx` into L2.
#define PREFETCH_NEXT(kb)                                                                               \
    do {                                                                                                \
        if (nx_lines) {                                                                                 \
            size_t l0_ = (kb) * nx_lines / kblocks, l1_ = ((kb) + 1) * nx_lines / kblocks;              \
            for (size_t l_ = l0_; l_ < l1_; l_++) _mm_prefetch((const char *)(nx + l_ * 64), _MM_HINT_T2); \
        }                                                                                               \
    } while (0)

#define BLOCK_KERNEL(NAME, DP)                                                                          \
    void NAME(const uint8_t *a, size_t lda, int mt, const uint8_t *b, size_t ldb, size_t bk, size_t bj, \
              int nt, size_t kblocks, uint8_t *c, size_t ldc, size_t pfd, const uint8_t *nx,            \
              size_t nx_lines) {                                                                        \
        config();                                                                                       \
        _tile_zero(4);                                                                                  \
        _tile_zero(5);                                                                                  \
        _tile_zero(6);                                                                                  \
        _tile_zero(7);                                                                                  \
        const uint8_t *a1 = a + 16 * lda;                                                               \
        if (mt == 2 && nt == 2) {                                                                       \
            for (size_t kb = 0; kb < kblocks; kb++) {                                                   \
                PREFETCH_A(kb);                                                                         \
                PREFETCH_NEXT(kb);                                                                      \
                _tile_loadd(0, a + kb * 64, lda);                                                       \
                _tile_loadd(2, b + kb * bk, ldb);                                                       \
                _tile_loadd(1, a1 + kb * 64, lda);                                                      \
                _tile_loadd(3, b + kb * bk + bj, ldb);                                                  \
                DP(4, 0, 2);                                                                            \
                DP(5, 0, 3);                                                                            \
                DP(6, 1, 2);                                                                            \
                DP(7, 1, 3);                                                                            \
            }                                                                                           \
        } else if (mt == 2) {                                                                           \
            for (size_t kb = 0; kb < kblocks; kb++) {                                                   \
                PREFETCH_A(kb);                                                                         \
                PREFETCH_NEXT(kb);                                                                      \
                _tile_loadd(0, a + kb * 64, lda);                                                       \
                _tile_loadd(2, b + kb * bk, ldb);                                                       \
                _tile_loadd(1, a1 + kb * 64, lda);                                                      \
                DP(4, 0, 2);                                                                            \
                DP(6, 1, 2);                                                                            \
            }                                                                                           \
        } else if (nt == 2) {                                                                           \
            for (size_t kb = 0; kb < kblocks; kb++) {                                                   \
                PREFETCH_A(kb);                                                                         \
                PREFETCH_NEXT(kb);                                                                      \
                _tile_loadd(0, a + kb * 64, lda);                                                       \
                _tile_loadd(2, b + kb * bk, ldb);                                                       \
                _tile_loadd(3, b + kb * bk + bj, ldb);                                                  \
                DP(4, 0, 2);                                                                            \
                DP(5, 0, 3);                                                                            \
            }                                                                                           \
        } else {                                                                                        \
            for (size_t kb = 0; kb < kblocks; kb++) {                                                   \
                PREFETCH_A(kb);                                                                         \
                PREFETCH_NEXT(kb);                                                                      \
                _tile_loadd(0, a + kb * 64, lda);                                                       \
                _tile_loadd(2, b + kb * bk, ldb);                                                       \
                DP(4, 0, 2);                                                                            \
            }                                                                                           \
        }                                                                                               \
        _tile_stored(4, c, ldc);                                                                        \
        if (nt == 2) _tile_stored(5, c + 64, ldc);                                                      \
        if (mt == 2) {                                                                                  \
            _tile_stored(6, c + 16 * ldc, ldc);                                                         \
            if (nt == 2) _tile_stored(7, c + 16 * ldc + 64, ldc);                                       \
        }                                                                                               \
        _tile_release();                                                                                \
    }

// bf16 pairs -> f32 (tdpbf16ps: products exact, f32 sums, denormal inputs and outputs flushed).
#define DP_BF16(c, a, b) _tile_dpbf16ps(c, a, b)
BLOCK_KERNEL(moehal_amx_bf16_block, DP_BF16)

// signed int8 quads -> int32 (tdpbssd: exact, wrapping int32 sums).
#define DP_S8(c, a, b) _tile_dpbssd(c, a, b)
BLOCK_KERNEL(moehal_amx_s8_block, DP_S8)
