// Small device helpers shared by the CUDA kernels: memory layouts, dtype traits, reductions.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

}  // namespace cuda
}  // namespace d2bench
