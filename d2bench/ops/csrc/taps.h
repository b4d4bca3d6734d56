// Where each of the 27 taps of a 3×3×3 kernel samples, for the two operators.
//
// Both operators are "sample 27 points per output voxel, modulate, contract with W"; they differ
// only in how a tap's coordinate is found and how the coordinate gradient is folded back into
// their own inputs. The kernels are written once against this small policy interface:
//
//   Voxel voxel(n, p)                       per-output-voxel state, read once
//   Coord coord(voxel, group, k)            sampling coordinate of tap k in offset group `group`
//   coord_t mask(voxel, group, k)           modulation (1 when there is none)
//   add_tap_grad(acc, voxel, group, k, ∂L/∂coord, ∂L/∂mask)   fold one tap's gradient
//   finish_grad(acc, voxel)                 write what add_tap_grad accumulated
//
// `store` says how a gradient reaches its output: written; added (a backward that reduces over
// the channels in several passes, the fused CUDA one, zeroes the outputs first); or added
// atomically (that backward also splits the taps of a voxel over several CTAs).
#pragma once

#include <type_traits>

#include "trilinear.h"

namespace d2bench {

// Shapes of one call. Output voxel p = (to·Ho + ho)·Wo + wo; its centre tap samples the input at
// (to·stride − pad + dil) along each axis.
struct ConvShape {
  int64_t batch, channels, depth, height, width;  // input N, C, T, H, W
  int64_t out_channels;                           // C_out
  int64_t out_depth, out_height, out_width;       // T', H', W'
  int64_t stride[3], pad[3], dil[3];
  int64_t groups;                                 // offset groups (1 for D²Conv3D)

  D2_HOST_DEVICE int64_t in_plane() const { return depth * height * width; }
  D2_HOST_DEVICE int64_t out_plane() const { return out_depth * out_height * out_width; }
  D2_HOST_DEVICE int64_t group_channels() const { return channels / groups; }
};

// Tap k = (i·3 + j)·3 + l has the offset (i − 1, j − 1, l − 1) along (t, y, x).
D2_HOST_DEVICE int tap_offset(int k, int axis) {
  const int digit = axis == 0 ? k / 9 : (axis == 1 ? (k / 3) % 3 : k % 3);
  return digit - 1;
}

enum class GradStore : unsigned char { write, add, atomic_add };

// out = value, or out += value (in coord_t). atomic_add is for float and double outputs in
// device code (the launcher only asks for it there).
template <typename scalar_t, typename coord_t>
D2_HOST_DEVICE void put(scalar_t& out, coord_t value, GradStore store) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
    if (store == GradStore::atomic_add) {
      atomicAdd(&out, static_cast<scalar_t>(value));
      return;
    }
  }
#endif
  const coord_t sum = store == GradStore::write ? value : static_cast<coord_t>(out) + value;
  out = static_cast<scalar_t>(sum);
}

template <typename coord_t>
struct Coord {
  coord_t v[3];  // (t, y, x)
};

template <typename coord_t>
D2_HOST_DEVICE void voxel_centre(const ConvShape& s, int64_t p, coord_t centre[3]) {
  const int64_t wo = p % s.out_width;
  const int64_t ho = (p / s.out_width) % s.out_height;
  const int64_t to = p / (s.out_width * s.out_height);
  centre[0] = static_cast<coord_t>(to * s.stride[0] - s.pad[0] + s.dil[0]);
  centre[1] = static_cast<coord_t>(ho * s.stride[1] - s.pad[1] + s.dil[1]);
  centre[2] = static_cast<coord_t>(wo * s.stride[2] - s.pad[2] + s.dil[2]);
}

// DCN-3D: tap k of group g samples at centre + p_k·dil + offset[n, 3·(g·27 + k) + axis, p].
template <typename scalar_t, typename coord_t>
struct DeformTaps {
  using map_type = scalar_t;
  ConvShape shape;
  const scalar_t* offset;  // N × 3·G·27 × P
  const scalar_t* mask;    // N × G·27 × P, or nullptr
  scalar_t* grad_offset;   // same layout as offset, or nullptr when not wanted
  scalar_t* grad_mask;     // same layout as mask, or nullptr when not wanted
  GradStore store = GradStore::write;

  struct Voxel {
    int64_t n, p;
    coord_t centre[3];
  };
  struct GradAcc {};

  D2_HOST_DEVICE Voxel voxel(int64_t n, int64_t p) const {
    Voxel v{n, p, {}};
    voxel_centre(shape, p, v.centre);
    return v;
  }
  D2_HOST_DEVICE int64_t channel_at(const Voxel& v, int64_t channel) const {
    return (v.n * 3 * shape.groups * 27 + channel) * shape.out_plane() + v.p;
  }
  D2_HOST_DEVICE Coord<coord_t> coord(const Voxel& v, int64_t g, int k) const {
    Coord<coord_t> c;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const coord_t off = static_cast<coord_t>(offset[channel_at(v, 3 * (g * 27 + k) + a)]);
      c.v[a] = v.centre[a] + coord_t(tap_offset(k, a) * shape.dil[a]) + off;
    }
    return c;
  }
  D2_HOST_DEVICE int64_t mask_at(const Voxel& v, int64_t g, int k) const {
    return ((v.n * shape.groups + g) * 27 + k) * shape.out_plane() + v.p;
  }
  D2_HOST_DEVICE coord_t modulation(const Voxel& v, int64_t g, int k) const {
    return mask ? static_cast<coord_t>(mask[mask_at(v, g, k)]) : coord_t(1);
  }
  D2_HOST_DEVICE void add_tap_grad(GradAcc&, const Voxel& v, int64_t g, int k,
                                   const coord_t grad_coord[3], coord_t grad_mod) const {
    if (grad_offset) {
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        put(grad_offset[channel_at(v, 3 * (g * 27 + k) + a)], grad_coord[a], store);
      }
    }
    if (grad_mask) put(grad_mask[mask_at(v, g, k)], grad_mod, store);
  }
  D2_HOST_DEVICE void finish_grad(const GradAcc&, const Voxel&) const {}
};

// D²Conv3D: tap k samples at centre + p_k ⊙ dil ⊙ s(p), s = dilation_map[n, :, p].
template <typename scalar_t, typename coord_t>
struct DilationTaps {
  using map_type = scalar_t;
  ConvShape shape;
  const scalar_t* dilation_map;  // N × 3 × P
  const scalar_t* mask;          // N × 27 × P, or nullptr
  scalar_t* grad_dilation;       // N × 3 × P, or nullptr when not wanted
  scalar_t* grad_mask;           // N × 27 × P, or nullptr when not wanted
  GradStore store = GradStore::write;

  struct Voxel {
    int64_t n, p;
    coord_t centre[3];
    coord_t step[3];  // dil ⊙ s(p): the distance from the centre to a ±1 tap
  };
  struct GradAcc {
    coord_t step_grad[3] = {coord_t(0), coord_t(0), coord_t(0)};
  };

  D2_HOST_DEVICE Voxel voxel(int64_t n, int64_t p) const {
    Voxel v{n, p, {}, {}};
    voxel_centre(shape, p, v.centre);
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const coord_t s = static_cast<coord_t>(dilation_map[(n * 3 + a) * shape.out_plane() + p]);
      v.step[a] = coord_t(shape.dil[a]) * s;
    }
    return v;
  }
  D2_HOST_DEVICE Coord<coord_t> coord(const Voxel& v, int64_t, int k) const {
    Coord<coord_t> c;
#pragma unroll
    for (int a = 0; a < 3; ++a) c.v[a] = v.centre[a] + coord_t(tap_offset(k, a)) * v.step[a];
    return c;
  }
  D2_HOST_DEVICE int64_t mask_at(const Voxel& v, int k) const {
    return (v.n * 27 + k) * shape.out_plane() + v.p;
  }
  D2_HOST_DEVICE coord_t modulation(const Voxel& v, int64_t, int k) const {
    return mask ? static_cast<coord_t>(mask[mask_at(v, k)]) : coord_t(1);
  }
  // ∂L/∂s_a = Σ_k p_k,a · dil_a · ∂L/∂coord_k,a
  D2_HOST_DEVICE void add_tap_grad(GradAcc& acc, const Voxel& v, int64_t, int k,
                                   const coord_t grad_coord[3], coord_t grad_mod) const {
#pragma unroll
    for (int a = 0; a < 3; ++a) acc.step_grad[a] += coord_t(tap_offset(k, a)) * grad_coord[a];
    if (grad_mask) put(grad_mask[mask_at(v, k)], grad_mod, store);
  }
  D2_HOST_DEVICE void finish_grad(const GradAcc& acc, const Voxel& v) const {
    if (!grad_dilation) return;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      put(grad_dilation[(v.n * 3 + a) * shape.out_plane() + v.p],
          acc.step_grad[a] * coord_t(shape.dil[a]), store);
    }
  }
};

}  // namespace d2bench
