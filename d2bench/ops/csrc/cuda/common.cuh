// Small device helpers shared by the CUDA kernels: memory layouts, dtype traits, reductions.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <mutex>
#include <set>
#include <utility>

#include "../checks.h"
#include "../taps.h"
#include "../trilinear.h"

namespace d2bench {
namespace cuda {

// Addresses of a 5-D tensor whose spatial dimensions are packed (contiguous or
// channels_last_3d): element (n, c, spatial s) lives at n·batch + c·channel + s·voxel, with s the
// linear index over T×H×W. Both standard memory formats satisfy this, so one kernel serves both.
struct Layout {
  int64_t batch, channel, voxel;

  static Layout of(const at::Tensor& t) {
    return Layout{t.stride(0), t.stride(1), t.stride(4)};
  }
  __host__ __device__ int64_t at(int64_t n, int64_t c, int64_t s) const {
    return n * batch + c * channel + s * voxel;
  }
};

// Whether `t` is laid out so that Layout::of describes it.
inline bool packed_layout(const at::Tensor& t) {
  return t.is_contiguous() || t.is_contiguous(at::MemoryFormat::ChannelsLast3d);
}

// Sampling coordinates are computed in float32 at least, whatever the input dtype.
template <typename scalar_t>
using coord_type = at::opmath_type<scalar_t>;

template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// atomicAdd for the accumulators the backward uses (float and double; sm_60+).
template <typename T>
__device__ __forceinline__ void atomic_add(T* address, T value) {
  atomicAdd(address, value);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether t's data starts on a multiple of `bytes` (vector loads, cp.async, TMA).
inline bool is_aligned(const at::Tensor& t, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(t.const_data_ptr()) % bytes == 0;
}

// Lets `kernel` take `bytes` of dynamic shared memory (over the default 48 KiB) on the current
// device. The attribute belongs to the device's context, so it is set once per kernel and device,
// not on every launch.
inline void allow_dynamic_smem(const void* kernel, int bytes) {
  static std::mutex guard;
  static std::set<std::pair<const void*, int>> done;
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(guard);
  if (done.count({kernel, device}) != 0) return;
  C10_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  done.insert({kernel, device});
}

// The VEC values of a 16-byte load as coord_t, by bit manipulation (no round trip through
// local memory, which taking the address of the loaded vector would cause).
__device__ __forceinline__ void unpack_word(uint32_t w, at::BFloat16*, float* out) {
  out[0] = __uint_as_float(w << 16);
  out[1] = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void unpack_word(uint32_t w, at::Half*, float* out) {
  out[0] = __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu)));
  out[1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
}
__device__ __forceinline__ void unpack_word(uint32_t w, float*, float* out) {
  out[0] = __uint_as_float(w);
}

template <typename scalar_t>
__device__ __forceinline__ void unpack16(const uint4& raw, coord_type<scalar_t>* out) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    out[0] = __hiloint2double(static_cast<int>(raw.y), static_cast<int>(raw.x));
    out[1] = __hiloint2double(static_cast<int>(raw.w), static_cast<int>(raw.z));
  } else {
    constexpr int per_word = 4 / sizeof(scalar_t);
    scalar_t* tag = nullptr;
    unpack_word(raw.x, tag, out);
    unpack_word(raw.y, tag, out + per_word);
    unpack_word(raw.z, tag, out + 2 * per_word);
    unpack_word(raw.w, tag, out + 3 * per_word);
  }
}

// Four consecutive channels as float: 8 bytes for 16-bit types, 16 for float32.
template <typename scalar_t>
__device__ __forceinline__ void load4(const scalar_t* p, float* v) {
  if constexpr (sizeof(scalar_t) == 2) {
    const uint2 raw = *reinterpret_cast<const uint2*>(p);
    scalar_t* tag = nullptr;
    unpack_word(raw.x, tag, v);
    unpack_word(raw.y, tag, v + 2);
  } else {
    const float4 f = *reinterpret_cast<const float4*>(p);
    v[0] = f.x;
    v[1] = f.y;
    v[2] = f.z;
    v[3] = f.w;
  }
}

template <typename scalar_t>
__device__ __forceinline__ void store4(scalar_t* p, const float* v) {
  if constexpr (sizeof(scalar_t) == 2) {
    uint32_t words[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const scalar_t lo = static_cast<scalar_t>(v[2 * e]), hi = static_cast<scalar_t>(v[2 * e + 1]);
      words[e] = static_cast<uint32_t>(*reinterpret_cast<const unsigned short*>(&lo)) |
                 (static_cast<uint32_t>(*reinterpret_cast<const unsigned short*>(&hi)) << 16);
    }
    *reinterpret_cast<uint2*>(p) = make_uint2(words[0], words[1]);
  } else {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  }
}

// Adds four consecutive floats: one vector atomic on sm_90+, four scalar ones before.
__device__ __forceinline__ void atomic_add4(float* address, float a, float b, float c, float d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float4*>(address), make_float4(a, b, c, d));
#else
  atomicAdd(address, a);
  atomicAdd(address + 1, b);
  atomicAdd(address + 2, c);
  atomicAdd(address + 3, d);
#endif
}


}  // namespace cuda
}  // namespace d2bench
