// Warp-level tensor-core primitives shared by the forward and backward kernels (sm_80+):
// ldmatrix fragment loads and one m16n8k16 product with float32 accumulation.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"

namespace d2bench {
namespace cuda {

template <typename scalar_t>
struct MmaType;
template <>
struct MmaType<at::BFloat16> {
  using type = __nv_bfloat16;
  __device__ static type from_float(float v) { return __float2bfloat16(v); }
  __device__ static uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
};
template <>
struct MmaType<at::Half> {
  using type = __half;
  __device__ static type from_float(float v) { return __float2half(v); }
  __device__ static uint32_t pack(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
};

__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* smem) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, const void* smem) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void mma_16816(float* c, const uint32_t* a, const uint32_t* b,
                                          __nv_bfloat16*) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma_16816(float* c, const uint32_t* a, const uint32_t* b,
                                          __half*) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// acc[i][j] += a[i] · B for one k16 step, B the rows ks .. ks + 15 and columns n0 .. n0 + 8·TILES_N
// of a row-major [k][n] shared-memory tile (ldmatrix.trans); a[i] holds A's m16 × k16 fragments.
template <int TILES_M, int TILES_N, int LD, typename mma_t>
__device__ __forceinline__ void mma_row_major_b(float (&acc)[TILES_M][TILES_N][4],
                                                const uint32_t (&a)[TILES_M][4],
                                                const mma_t (*b_tile)[LD], int ks, int n0,
                                                int lane) {
  mma_t* tag = nullptr;
#pragma unroll
  for (int jj = 0; jj < TILES_N / 2; ++jj) {
    uint32_t b[4];  // k16 × n16: b[0..1] for columns n0 + 16·jj + 0..7, b[2..3] for + 8..15
    ldmatrix_x4_trans(
        b, &b_tile[ks + (lane & 7) + ((lane >> 3) & 1) * 8][n0 + jj * 16 + (lane >> 4) * 8]);
#pragma unroll
    for (int i = 0; i < TILES_M; ++i) {
      mma_16816(acc[i][2 * jj], a[i], b, tag);
      mma_16816(acc[i][2 * jj + 1], a[i], b + 2, tag);
    }
  }
}

// 16-byte asynchronous global → shared copies (sm_80+); `valid` false fills zeros instead.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

}  // namespace cuda
}  // namespace d2bench
