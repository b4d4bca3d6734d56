// Hopper (sm_90a) primitives of the forward in hopper_forward.cuh: mbarriers, named barriers,
// the asynchronous-proxy fence, and the warpgroup MMA m64n256k16 with its shared-memory
// descriptors. Everything here compiles to nothing but a trap on other targets; the
// launcher only picks the kernel on a compute-capability-9.0 device of a build that targets sm_90a.
#pragma once

#include <cstdint>

#include "mma.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define D2_SM90A 1
#endif

namespace d2bench {
namespace cuda {
namespace hopper {

__device__ __forceinline__ unsigned smem_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// ---- mbarriers (one phase per pipeline round) ----
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(count)
               : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_address(bar)) : "memory");
}
// Returns once the phase of the given parity has completed (a fresh barrier counts its phase
// "before 0", parity 1, as complete).
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, unsigned parity) {
  const unsigned addr = smem_address(bar);
  unsigned done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
}

// Arrives on `bar` and adds `bytes` to the transfers its current phase waits for.
__device__ __forceinline__ void mbarrier_arrive_expect(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                   smem_address(bar)),
               "r"(bytes)
               : "memory");
}

// One tile of a 2-D tensor map (innermost coordinate first) into shared memory by the copy
// engine, completing `bytes` on `bar`. The map lives in kernel parameter space.
__device__ __forceinline__ void tma_load_2d(void* smem, const void* tensor_map, int inner,
                                            int outer, uint64_t* bar) {
#ifdef D2_SM90A
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem_address(smem)),
      "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(inner), "r"(outer),
      "r"(smem_address(bar))
      : "memory");
#endif
}

// Named barrier over `threads` threads of the CTA (a warpgroup: 128).
__device__ __forceinline__ void named_barrier(unsigned id, unsigned threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Generic-proxy writes to shared memory (st.shared, cp.async) become visible to the tensor
// cores' asynchronous proxy.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// ---- warpgroup MMA ----
// Descriptor of a K-major operand tile in shared memory, 64-byte swizzle: rows of 32 16-bit
// elements (64 bytes), 8-row groups 512 bytes apart, 16-byte chunk c of row r stored at chunk
// c ^ ((r >> 1) & 3). The tile must start on a 512-byte boundary; adding 2 to the descriptor
// moves its start 32 bytes on, to the second k16 slice of each row.
__device__ __forceinline__ uint64_t sw64_descriptor(const void* tile) {
  const uint64_t start = (smem_address(tile) & 0x3FFFFu) >> 4;
  constexpr uint64_t leading = 1;          // unused for swizzled K-major layouts
  constexpr uint64_t stride = 512 >> 4;    // from one 8-row group to the next
  constexpr uint64_t swizzle_64b = 2;
  return start | (leading << 16) | (stride << 32) | (swizzle_64b << 62);
}
// Byte offset of 16-byte chunk `chunk` (0..3) of row `row` in such a tile.
__device__ __forceinline__ unsigned sw64_offset(int row, int chunk) {
  return static_cast<unsigned>(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

__device__ __forceinline__ void wgmma_fence() {
#ifdef D2_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef D2_SM90A
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifdef D2_SM90A
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// The 128 float accumulators of one thread: thread t of the warpgroup holds, for every n8 block
// j, d[4j], d[4j+1] at row 16·(t/32) + (t%32)/4, columns 8j + 2·(t%4) + {0, 1}, and d[4j+2],
// d[4j+3] eight rows further down.
#define D2_WGMMA_ACC_STRING \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define D2_WGMMA_ACC_OPERANDS \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
  "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), \
  "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), \
  "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), \
  "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), \
  "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), \
  "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), \
  "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), \
  "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), \
  "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), \
  "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), \
  "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), \
  "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), \
  "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), \
  "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
  "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), \
  "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), \
  "+f"(d[126]), "+f"(d[127])

// D (64 × 256, float32) = A (64 × 16, shared) · B (16 × 256, shared) + (accumulate ? D : 0),
// for A and B of the PTX type TYPE (bf16, f16).
#ifdef D2_SM90A
#define D2_WGMMA_M64N256K16(TYPE)                                                        \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %130, 0;\n"                          \
               "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE              \
               " {" D2_WGMMA_ACC_STRING "}, %128, %129, p, 1, 1, 0, 0;\n}\n"               \
               : D2_WGMMA_ACC_OPERANDS                                                   \
               : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)))
#else
#define D2_WGMMA_M64N256K16(TYPE) __trap()
#endif
__device__ __forceinline__ void wgmma_m64n256k16(float* d, uint64_t a, uint64_t b, bool accumulate,
                                                 __nv_bfloat16*) {
  D2_WGMMA_M64N256K16("bf16");
}
__device__ __forceinline__ void wgmma_m64n256k16(float* d, uint64_t a, uint64_t b, bool accumulate,
                                                 __half*) {
  D2_WGMMA_M64N256K16("f16");
}

#undef D2_WGMMA_M64N256K16
#undef D2_WGMMA_ACC_STRING
#undef D2_WGMMA_ACC_OPERANDS

}  // namespace hopper
}  // namespace cuda
}  // namespace d2bench
