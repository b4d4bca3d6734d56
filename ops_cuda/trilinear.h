// Trilinear sampling with zero padding: the value and its gradient with respect to the sampling
// coordinate. This is the one place the sampling math lives; the CPU and the CUDA kernels both
// include it unchanged.
//
// Conventions (shared/reference/seed-facts.md §1):
// - each of the 8 corners outside the T×H×W volume contributes 0, so a coordinate <= -1 or
//   >= size on any axis samples exactly 0;
// - at an exact integer coordinate the derivative is the one-sided difference towards the +1
//   corner (floor(c) == c, the fractional part is 0);
// - a NaN coordinate samples 0 and has zero gradient (it is "outside").
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define D2_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define D2_HOST_DEVICE inline
#endif

namespace d2bench {

// The 8 corners of one sampling location: where they are in a plane and how much each weighs.
template <typename coord_t>
struct Corners {
  int64_t index[8];   // offset into a contiguous T×H×W plane; 0 for a corner outside
  coord_t weight[8];  // trilinear weight; 0 for a corner outside
  coord_t frac[3];    // fractional part along (t, y, x)
  uint8_t inside;     // bit c set when corner c = (dt·4 + dy·2 + dx) lies in the volume
};

// Corner c = dt·4 + dy·2 + dx, dt/dy/dx ∈ {0, 1} the step from floor(coordinate).
template <typename coord_t>
D2_HOST_DEVICE void trilinear_corners(coord_t t, coord_t y, coord_t x, int64_t depth,
                                      int64_t height, int64_t width, Corners<coord_t>& out) {
  out.inside = 0;
  // Written as negations so that NaN coordinates count as outside.
  if (!(t > coord_t(-1) && t < coord_t(depth) && y > coord_t(-1) && y < coord_t(height) &&
        x > coord_t(-1) && x < coord_t(width))) {
    for (int c = 0; c < 8; ++c) {
      out.index[c] = 0;
      out.weight[c] = coord_t(0);
    }
    out.frac[0] = out.frac[1] = out.frac[2] = coord_t(0);
    return;
  }
  const coord_t t0f = floor(t), y0f = floor(y), x0f = floor(x);
  const int64_t t0 = static_cast<int64_t>(t0f), y0 = static_cast<int64_t>(y0f),
                x0 = static_cast<int64_t>(x0f);
  const coord_t ft = t - t0f, fy = y - y0f, fx = x - x0f;
  out.frac[0] = ft;
  out.frac[1] = fy;
  out.frac[2] = fx;
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const int dt = c >> 2, dy = (c >> 1) & 1, dx = c & 1;
    const int64_t ti = t0 + dt, yi = y0 + dy, xi = x0 + dx;
    const bool in = ti >= 0 && ti < depth && yi >= 0 && yi < height && xi >= 0 && xi < width;
    const coord_t w = (dt ? ft : coord_t(1) - ft) * (dy ? fy : coord_t(1) - fy) *
                      (dx ? fx : coord_t(1) - fx);
    out.index[c] = in ? (ti * height + yi) * width + xi : 0;
    out.weight[c] = in ? w : coord_t(0);
    out.inside |= static_cast<uint8_t>(in) << c;
  }
}

// Σ_c weight_c · plane[index_c] over the corners inside the volume.
template <typename scalar_t, typename coord_t>
D2_HOST_DEVICE coord_t trilinear_value(const scalar_t* plane, const Corners<coord_t>& k) {
  coord_t acc = coord_t(0);
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    if (k.inside & (1u << c)) acc += k.weight[c] * static_cast<coord_t>(plane[k.index[c]]);
  }
  return acc;
}

// ∂weight/∂(t, y, x) of corner c = dt·4 + dy·2 + dx, given the fractional parts (ft, fy, fx).
template <typename coord_t>
D2_HOST_DEVICE void corner_weight_grad(int c, coord_t ft, coord_t fy, coord_t fx, coord_t d[3]) {
  const int dt = c >> 2, dy = (c >> 1) & 1, dx = c & 1;
  const coord_t wt = dt ? ft : coord_t(1) - ft;
  const coord_t wy = dy ? fy : coord_t(1) - fy;
  const coord_t wx = dx ? fx : coord_t(1) - fx;
  const coord_t st = dt ? coord_t(1) : coord_t(-1);
  const coord_t sy = dy ? coord_t(1) : coord_t(-1);
  const coord_t sx = dx ? coord_t(1) : coord_t(-1);
  d[0] = st * wy * wx;
  d[1] = wt * sy * wx;
  d[2] = wt * wy * sx;
}

// ∂value/∂(t, y, x): the derivative of each corner's weight times its value, summed.
template <typename scalar_t, typename coord_t>
D2_HOST_DEVICE void trilinear_coord_grad(const scalar_t* plane, const Corners<coord_t>& k,
                                         coord_t grad[3]) {
  grad[0] = grad[1] = grad[2] = coord_t(0);
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    if (!(k.inside & (1u << c))) continue;
    const coord_t v = static_cast<coord_t>(plane[k.index[c]]);
    coord_t d[3];
    corner_weight_grad(c, k.frac[0], k.frac[1], k.frac[2], d);
    grad[0] += d[0] * v;
    grad[1] += d[1] * v;
    grad[2] += d[2] * v;
  }
}

}  // namespace d2bench
