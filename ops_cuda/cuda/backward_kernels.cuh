// Backward of both operators, one chunk of output voxels at a time (the GEMMs run in cuBLAS
// between these kernels). One warp per output voxel: its lanes split the channels, so the tap's
// corners are computed once per warp and the per-voxel coordinate gradients reduce in registers.
#pragma once

#include <type_traits>

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
                                      scalar_t* __restrict__ cols, bool vector4) {
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
      if (vector4) {  // channels contiguous: four per lane, only the corners inside
        for (int64_t c = g * cg + 4 * lane; c < (g + 1) * cg; c += 128) {
          float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
          for (int q = 0; q < 8; ++q) {
            if (corners.weight[q] == coord_t(0)) continue;  // outside, or an integer coordinate
            float v[4];
            load4(x + c + corners.index[q], v);
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[e] += static_cast<float>(corners.weight[q]) * v[e];
          }
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[e] *= static_cast<float>(m);
          store4(row + c, acc);
        }
        continue;
      }
      for (int64_t c = g * cg + lane; c < (g + 1) * cg; c += 32) {
        row[c] = static_cast<scalar_t>(m * trilinear_value(x + c * xl.channel, corners));
      }
    }
  }
}

// One tap of one voxel with channels contiguous, four channels per lane from c_begin in steps of
// 128: vector atomics for the input gradient; the corner values, loaded once, serve both the
// modulation gradient (the sample's value) and the coordinate gradient (its derivative).
template <typename scalar_t, typename coord_t>
__device__ __forceinline__ void vector_tap_backward(const scalar_t* __restrict__ x,
                                                    const scalar_t* __restrict__ row,
                                                    float* __restrict__ grad_x,
                                                    const Corners<coord_t>& corners, coord_t m,
                                                    int64_t c_begin, int64_t c_end,
                                                    bool coordinates, bool want_mask,
                                                    coord_t grad_coord[3], coord_t& grad_mod) {
  if (corners.inside == 0) return;
  // ∂weight_q/∂(t, y, x) for each corner (0 for corners outside the volume).
  float dw[8][3];
  const float ft = corners.frac[0], fy = corners.frac[1], fx = corners.frac[2];
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    corner_weight_grad(q, ft, fy, fx, dw[q]);
    if (!(corners.inside & (1u << q))) dw[q][0] = dw[q][1] = dw[q][2] = 0.0f;
  }
  const float mf = static_cast<float>(m);
  float gc[3] = {0.0f, 0.0f, 0.0f}, gm = 0.0f;
  for (int64_t c = c_begin; c < c_end; c += 128) {
    float gv[4];
    load4(row + c, gv);
    if (gv[0] == 0.0f && gv[1] == 0.0f && gv[2] == 0.0f && gv[3] == 0.0f) continue;
    if (grad_x) {
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        if (corners.weight[q] == coord_t(0)) continue;  // outside, or an integer coordinate
        const float w = static_cast<float>(corners.weight[q]) * mf;
        atomic_add4(grad_x + c + corners.index[q], w * gv[0], w * gv[1], w * gv[2], w * gv[3]);
      }
    }
    if (coordinates) {
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        if (!(corners.inside & (1u << q))) continue;
        float v[4];
        load4(x + c + corners.index[q], v);
        const float dot = gv[0] * v[0] + gv[1] * v[1] + gv[2] * v[2] + gv[3] * v[3];
        if (want_mask) gm += static_cast<float>(corners.weight[q]) * dot;
#pragma unroll
        for (int a = 0; a < 3; ++a) gc[a] += dw[q][a] * dot;
      }
    }
  }
#pragma unroll
  for (int a = 0; a < 3; ++a) grad_coord[a] += static_cast<coord_t>(gc[a] * mf);
  grad_mod += static_cast<coord_t>(gm);
}

// From gcol[j, k·C + c] = ∂L/∂A: the input gradient (atomically spread over the 8 corners) and
// the coordinate and modulation gradients (reduced over the warp, folded by the policy).
template <typename scalar_t, typename acc_t, typename Taps>
__global__ void backward_sampling_kernel(const scalar_t* __restrict__ x, Layout xl,
                                         const Taps taps, int64_t n, int64_t p0, int64_t count,
                                         const scalar_t* __restrict__ gcol,
                                         acc_t* __restrict__ grad_x, bool coordinates,
                                         bool vector4) {
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
      if constexpr (std::is_same_v<acc_t, float>) {
        if (vector4) {
          vector_tap_backward(x, row, grad_x, corners, m, g * cg + 4 * lane, (g + 1) * cg,
                              coordinates, want_mask, grad_coord, grad_mod);
        }
      }
      for (int64_t c = g * cg + lane; !vector4 && c < (g + 1) * cg; c += 32) {
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
