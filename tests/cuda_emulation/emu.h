// Shims that let the CUDA sources of d2bench/ops/csrc/ compile as host C++ and run on the CPU, so that CI
// (which has no GPU) still executes the CUDA-core kernels' logic. Force-included before every
// other header by harness.py. A launch runs its blocks one after another, each block as
// blockDim.x host threads: __syncthreads is a barrier over them, a warp shuffle an exchange
// through per-warp slots behind a 32-thread barrier, atomics std::atomic_ref. Shared memory
// starts as 0xFF bytes (NaN), so a read of a value no thread wrote shows in the results.
// Static __shared__ variables become function statics, which is right while blocks run one at a
// time. The mma.sync primitives (ldmatrix, mma, cp.async) are emulated in emu_mma.h; the Hopper
// forward (wgmma, TMA) is not: harness.py leaves it out.
#pragma once
#include <atomic>
#include <barrier>
#include <cxxabi.h>
#include <dlfcn.h>
#include <mutex>
#include <string>
#include <utility>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct uint4 { unsigned x, y, z, w; };
struct uint2 { unsigned x, y; };
struct float4 { float x, y, z, w; };
struct double2 { double x, y; };
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline double2 make_double2(double a, double b) { return {a, b}; }
struct __half { unsigned short x; };
struct __nv_bfloat16 { unsigned short x; };
struct __half2 { __half a, b; };
struct __nv_bfloat162 { __nv_bfloat16 a, b; };
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline double __hiloint2double(int hi, int lo) {
  return std::bit_cast<double>((uint64_t(uint32_t(hi)) << 32) | uint32_t(lo));
}
inline __half __ushort_as_half(unsigned short s) { return __half{s}; }
inline float __half2float(__half h) { return c10::detail::fp16_ieee_to_fp32_value(h.x); }
inline __half __float2half(float f) { return __half{c10::detail::fp16_ieee_from_fp32_value(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16{c10::BFloat16(f).x}; }
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half(a), __float2half(b)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
template <class T> inline T __ldg(const T* p) { return *p; }

namespace emu {
struct Block {
  std::vector<unsigned char> smem;
  std::unique_ptr<std::barrier<>> bar;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<uint64_t> slots;
};
inline thread_local Block* block = nullptr;
inline uint4* dynamic_smem() { return reinterpret_cast<uint4*>(block->smem.data()); }
}  // namespace emu
inline thread_local dim3 threadIdx, blockIdx, gridDim, blockDim;
inline void __syncthreads() { emu::block->bar->arrive_and_wait(); }
template <class T> inline T __shfl_xor_sync(unsigned, T v, int offset) {
  static_assert(sizeof(T) <= 8);
  emu::Block* b = emu::block;
  const int t = threadIdx.x, w = t / 32, lane = t % 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  b->slots[t] = bits;
  b->warp[w]->arrive_and_wait();
  T r;
  std::memcpy(&r, &b->slots[w * 32 + (lane ^ offset)], sizeof(T));
  b->warp[w]->arrive_and_wait();
  return r;
}
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }
inline unsigned atomicOr(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_or(v); }
inline float4 atomicAdd(float4* p, float4 v) {
  atomicAdd(&p->x, v.x); atomicAdd(&p->y, v.y); atomicAdd(&p->z, v.z); atomicAdd(&p->w, v.w);
  return v;
}
// The CUDA runtime calls of the host code. Occupancy: two CTAs per SM (one above 110 KB of
// shared memory), as register limits give the kernels under test on a real GPU.
using cudaError_t = int;
constexpr int cudaSuccess = 0;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
inline int cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return 0; }
inline int cudaGetDevice(int* d) { *d = 0; return 0; }
inline int cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void*, int, size_t smem) {
  *n = smem > 110000 ? 1 : 2;
  return 0;
}
namespace emu {
// The kernels launched since the last launched_kernels() call, by demangled symbol (a test's
// proof of which path ran).
inline std::mutex launches_guard;
inline std::vector<std::string> launches;
inline std::string symbol_of(const void* function) {
  Dl_info info{};
  if (dladdr(function, &info) == 0 || info.dli_sname == nullptr) return "?";
  int status = 0;
  char* name = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string symbol = status == 0 && name != nullptr ? name : info.dli_sname;
  std::free(name);
  return symbol;
}
inline std::vector<std::string> launched_kernels() {
  const std::lock_guard<std::mutex> lock(launches_guard);
  return std::exchange(launches, {});
}
template <class... P>
auto launcher(void (*kernel)(P...), dim3 grid, dim3 threads, size_t smem, int = 0) {
  {
    const std::lock_guard<std::mutex> lock(launches_guard);
    launches.push_back(symbol_of(reinterpret_cast<const void*>(kernel)));
  }
  return [=](auto&&... args) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block b;
        b.smem.assign(smem + 16, 0xFF);
        b.bar = std::make_unique<std::barrier<>>(threads.x);
        for (unsigned w = 0; w < threads.x / 32; ++w) b.warp.push_back(std::make_unique<std::barrier<>>(32));
        b.slots.assign(threads.x, 0);
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads.x; ++t) {
          pool.emplace_back([&, t] {
            emu::block = &b;
            threadIdx = dim3(t);
            blockIdx = dim3(bx, by);
            gridDim = grid;
            blockDim = threads;
            kernel(args...);
          });
        }
        for (auto& th : pool) th.join();
      }
    }
  };
}
}  // namespace emu
