// Trilinear sampling with zero padding: the value and its gradient with respect to the sampling
// coordinate. This is the one place the sampling math lives; the CPU and the CUDA kernels both
// include it unchanged.
//
// Conventions (trilinear sampling with zero padding, as the original operator):
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

// Whether a sample at (t, y, x) can touch the volume at all: every coordinate in (−1, size).
// Written as a negation of "outside" so that NaN coordinates count as outside.
template <typename coord_t>
D2_HOST_DEVICE bool trilinear_touches(coord_t t, coord_t y, coord_t x, int64_t depth,
                                      int64_t height, int64_t width) {
  return t > coord_t(-1) && t < coord_t(depth) && y > coord_t(-1) && y < coord_t(height) &&
         x > coord_t(-1) && x < coord_t(width);
}

// One axis of the stencil: the lower neighbour floor(c), the fractional part, and which of the
// two neighbours (lower, lower + 1) lie in [0, size). The corners are products of two axes'
// weights (1 − frac, frac), so the 8-corner form below and the separable gather of the Hopper
// forward both build on this. index_t: int64_t in general, int where the plane is < 2³¹.
template <typename coord_t, typename index_t>
struct AxisStencil {
  index_t lower;
  coord_t frac;
  bool inside[2];
};

template <typename index_t, typename coord_t>
D2_HOST_DEVICE AxisStencil<coord_t, index_t> trilinear_axis(coord_t c, index_t size) {
  const coord_t lower = floor(c);
  AxisStencil<coord_t, index_t> axis;
  axis.lower = static_cast<index_t>(lower);
  axis.frac = c - lower;
  axis.inside[0] = axis.lower >= 0 && axis.lower < size;
  axis.inside[1] = axis.lower + 1 >= 0 && axis.lower + 1 < size;
  return axis;
}

// The weight of neighbour d ∈ {0, 1} along an axis with fractional part `frac`.
template <typename coord_t>
D2_HOST_DEVICE coord_t axis_weight(coord_t frac, int d) {
  return d ? frac : coord_t(1) - frac;
}

// Corner c = dt·4 + dy·2 + dx, dt/dy/dx ∈ {0, 1} the step from floor(coordinate).
template <typename coord_t>
D2_HOST_DEVICE void trilinear_corners(coord_t t, coord_t y, coord_t x, int64_t depth,
                                      int64_t height, int64_t width, Corners<coord_t>& out) {
  out.inside = 0;
  if (!trilinear_touches(t, y, x, depth, height, width)) {
    for (int c = 0; c < 8; ++c) {
      out.index[c] = 0;
      out.weight[c] = coord_t(0);
    }
    out.frac[0] = out.frac[1] = out.frac[2] = coord_t(0);
    return;
  }
  const auto at = trilinear_axis(t, depth), ay = trilinear_axis(y, height),
             ax = trilinear_axis(x, width);
  out.frac[0] = at.frac;
  out.frac[1] = ay.frac;
  out.frac[2] = ax.frac;
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const int dt = c >> 2, dy = (c >> 1) & 1, dx = c & 1;
    const bool in = at.inside[dt] && ay.inside[dy] && ax.inside[dx];
    const coord_t w =
        axis_weight(at.frac, dt) * axis_weight(ay.frac, dy) * axis_weight(ax.frac, dx);
    out.index[c] = in ? ((at.lower + dt) * height + ay.lower + dy) * width + ax.lower + dx : 0;
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
  const coord_t wt = axis_weight(ft, dt), wy = axis_weight(fy, dy), wx = axis_weight(fx, dx);
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
