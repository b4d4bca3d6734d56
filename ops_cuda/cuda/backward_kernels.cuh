// Backward of both operators, one chunk of output voxels at a time (the GEMMs run in cuBLAS
// between these kernels). One warp per output voxel: its lanes split the channels, so the tap's
// corners are computed once per warp and the per-voxel coordinate gradients reduce in registers.
#pragma once

#include "common.cuh"

namespace d2bench {
namespace cuda {

constexpr int kWarpsPerBlock = 8;

// Corners of one sample with their indices turned into element offsets of sample n.
template <typename coord_t>
__device__ __forceinline__ void corners_at(const ConvShape& s, Layout xl, int64_t n,
                                           const Coord<coord_t>& c, Corners<coord_t>& out) {
  trilinear_corners(c.v[0], c.v[1], c.v[2], s.depth, s.height, s.width, out);
#pragma unroll
  for (int q = 0; q < 8; ++q) out.index[q] = n * xl.batch + out.index[q] * xl.voxel;
}

// cols[j, k·C + c] = m_gk · x_c(coord_gk) for voxels p0 .. p0 + count − 1 of sample n.
template <typename scalar_t, typename Taps>
__global__ void gather_columns_kernel(const scalar_t* __restrict__ x, Layout xl, const Taps taps,
                                      int64_t n, int64_t p0, int64_t count,
                                      scalar_t* __restrict__ cols) {
  using coord_t = coord_type<scalar_t>;
  const ConvShape& s = taps.shape;
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (j >= count) return;
  const int64_t width = 27 * s.channels, cg = s.group_channels();
  const auto v = taps.voxel(n, p0 + j);
  Corners<coord_t> corners;
  for (int64_t g = 0; g < s.groups; ++g) {
    for (int k = 0; k < 27; ++k) {
      corners_at(s, xl, n, taps.coord(v, g, k), corners);
      const coord_t m = taps.modulation(v, g, k);
      scalar_t* row = cols + j * width + static_cast<int64_t>(k) * s.channels;
      for (int64_t c = g * cg + lane; c < (g + 1) * cg; c += 32) {
        row[c] = static_cast<scalar_t>(m * trilinear_value(x + c * xl.channel, corners));
      }
    }
  }
}

// From gcol[j, k·C + c] = ∂L/∂A: the input gradient (atomically spread over the 8 corners) and
// the coordinate and modulation gradients (reduced over the warp, folded by the policy).
template <typename scalar_t, typename acc_t, typename Taps>
__global__ void backward_sampling_kernel(const scalar_t* __restrict__ x, Layout xl,
                                         const Taps taps, int64_t n, int64_t p0, int64_t count,
                                         const scalar_t* __restrict__ gcol,
                                         acc_t* __restrict__ grad_x, bool coordinates) {
  using coord_t = coord_type<scalar_t>;
  const ConvShape& s = taps.shape;
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (j >= count) return;
  const int64_t width = 27 * s.channels, cg = s.group_channels();
  const auto v = taps.voxel(n, p0 + j);
  typename Taps::GradAcc acc;
  const bool want_mask = taps.grad_mask != nullptr;
  Corners<coord_t> corners;
  for (int64_t g = 0; g < s.groups; ++g) {
    for (int k = 0; k < 27; ++k) {
      corners_at(s, xl, n, taps.coord(v, g, k), corners);
      const coord_t m = taps.modulation(v, g, k);
      const scalar_t* row = gcol + j * width + static_cast<int64_t>(k) * s.channels;
      coord_t grad_coord[3] = {coord_t(0), coord_t(0), coord_t(0)};
      coord_t grad_mod = coord_t(0);
      for (int64_t c = g * cg + lane; c < (g + 1) * cg; c += 32) {
        const coord_t gv = static_cast<coord_t>(row[c]);
        if (gv == coord_t(0) || corners.inside == 0) continue;
        const int64_t channel = c * xl.channel;
        if (grad_x) {
          const coord_t gm = gv * m;
#pragma unroll
          for (int q = 0; q < 8; ++q) {
            if (corners.inside & (1u << q)) {
              atomic_add(grad_x + channel + corners.index[q],
                         static_cast<acc_t>(corners.weight[q] * gm));
            }
          }
        }
        if (coordinates) {
          const scalar_t* plane = x + channel;
          if (want_mask) grad_mod += gv * trilinear_value(plane, corners);
          coord_t d[3];
          trilinear_coord_grad(plane, corners, d);
#pragma unroll
          for (int a = 0; a < 3; ++a) grad_coord[a] += gv * m * d[a];
        }
      }
      if (coordinates) {
#pragma unroll
        for (int a = 0; a < 3; ++a) grad_coord[a] = warp_sum(grad_coord[a]);
        grad_mod = warp_sum(grad_mod);
        if (lane == 0) taps.add_tap_grad(acc, v, g, k, grad_coord, grad_mod);
      }
    }
  }
  if (coordinates && lane == 0) taps.finish_grad(acc, v);
}

}  // namespace cuda
}  // namespace d2bench
