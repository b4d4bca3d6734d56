// CPU kernels of d2bench::d2conv3d and d2bench::deform_conv3d, forward and backward.
//
// The output voxels are processed in chunks: the modulated samples of one chunk (C·27 × chunk)
// are gathered in parallel over voxels and contracted with W by a BLAS GEMM. The chunk is sized
// to a fixed byte budget, so no buffer ever grows with C·27·T'H'W'. Every pass writes disjoint
// memory per thread (input gradient: one channel per task; coordinate gradients: one voxel per
// task), so the results are deterministic and need no atomics. Indexing is 64-bit throughout.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "../checks.h"
#include "../taps.h"
#include "../trilinear.h"

namespace d2bench {
namespace {

constexpr int64_t kColumnBudgetBytes = 32 << 20;
// Samples per parallel task below which splitting costs more than it saves.
constexpr int64_t kSamplesPerTask = 1 << 14;

int64_t grain(int64_t samples_per_item) {
  return std::max<int64_t>(1, kSamplesPerTask / std::max<int64_t>(1, samples_per_item));
}

int64_t column_chunk(const ConvShape& s, int64_t element_size) {
  const int64_t per_voxel = s.channels * 27 * element_size;
  return std::max<int64_t>(1, std::min<int64_t>(s.out_plane(), kColumnBudgetBytes / per_voxel));
}

// A contiguous (C·27 × count) matrix at the start of the flat column buffer, so that a short
// last chunk keeps the row stride the gather writes with.
at::Tensor column_view(const at::Tensor& buffer, const ConvShape& s, int64_t count) {
  return buffer.narrow(0, 0, s.channels * 27 * count).view({s.channels * 27, count});
}

// col[(c·27 + k)·count + j] = m_k · x_c(coord_k) for voxels p0 .. p0 + count − 1 of sample n.
template <typename scalar_t, typename Taps>
void gather_columns(const scalar_t* x_n, const Taps& taps, int64_t n, int64_t p0, int64_t count,
                    scalar_t* col) {
  using coord_t = at::opmath_type<scalar_t>;
  const ConvShape& s = taps.shape;
  const int64_t plane = s.in_plane(), cg = s.group_channels();
  at::parallel_for(0, count, grain(s.channels * 27), [&](int64_t begin, int64_t end) {
    Corners<coord_t> corners;
    for (int64_t j = begin; j < end; ++j) {
      const auto v = taps.voxel(n, p0 + j);
      for (int64_t g = 0; g < s.groups; ++g) {
        for (int k = 0; k < 27; ++k) {
          const auto c = taps.coord(v, g, k);
          trilinear_corners(c.v[0], c.v[1], c.v[2], s.depth, s.height, s.width, corners);
          const coord_t m = taps.modulation(v, g, k);
          for (int64_t ch = g * cg; ch < (g + 1) * cg; ++ch) {
            col[(ch * 27 + k) * count + j] =
                static_cast<scalar_t>(m * trilinear_value(x_n + ch * plane, corners));
          }
        }
      }
    }
  });
}

// grad_x_n[c] += Σ_{j,k} m_k · gcol[(c·27 + k)·count + j] spread over the 8 corners.
template <typename scalar_t, typename Taps>
void scatter_columns(const scalar_t* gcol, const Taps& taps, int64_t n, int64_t p0, int64_t count,
                     scalar_t* grad_x_n) {
  using coord_t = at::opmath_type<scalar_t>;
  const ConvShape& s = taps.shape;
  const int64_t plane = s.in_plane(), cg = s.group_channels();
  at::parallel_for(0, s.channels, grain(count * 27), [&](int64_t begin, int64_t end) {
    Corners<coord_t> corners;
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t g = ch / cg;
      scalar_t* grad_plane = grad_x_n + ch * plane;
      for (int64_t j = 0; j < count; ++j) {
        const auto v = taps.voxel(n, p0 + j);
        for (int k = 0; k < 27; ++k) {
          const coord_t gv =
              taps.modulation(v, g, k) * static_cast<coord_t>(gcol[(ch * 27 + k) * count + j]);
          if (gv == coord_t(0)) continue;
          const auto c = taps.coord(v, g, k);
          trilinear_corners(c.v[0], c.v[1], c.v[2], s.depth, s.height, s.width, corners);
          for (int q = 0; q < 8; ++q) {
            if (corners.inside & (1u << q)) {
              grad_plane[corners.index[q]] += static_cast<scalar_t>(corners.weight[q] * gv);
            }
          }
        }
      }
    }
  });
}

// ∂L/∂coord and ∂L/∂m for every tap of every voxel in the chunk, folded back by the policy.
template <typename scalar_t, typename Taps>
void coordinate_grads(const scalar_t* gcol, const scalar_t* x_n, const Taps& taps, int64_t n,
                      int64_t p0, int64_t count) {
  using coord_t = at::opmath_type<scalar_t>;
  const ConvShape& s = taps.shape;
  const int64_t plane = s.in_plane(), cg = s.group_channels();
  const bool want_mask = taps.grad_mask != nullptr;
  at::parallel_for(0, count, grain(s.channels * 27), [&](int64_t begin, int64_t end) {
    Corners<coord_t> corners;
    for (int64_t j = begin; j < end; ++j) {
      const auto v = taps.voxel(n, p0 + j);
      typename Taps::GradAcc acc;
      for (int64_t g = 0; g < s.groups; ++g) {
        for (int k = 0; k < 27; ++k) {
          const auto c = taps.coord(v, g, k);
          trilinear_corners(c.v[0], c.v[1], c.v[2], s.depth, s.height, s.width, corners);
          const coord_t m = taps.modulation(v, g, k);
          coord_t grad_coord[3] = {coord_t(0), coord_t(0), coord_t(0)};
          coord_t grad_mod = coord_t(0);
          for (int64_t ch = g * cg; ch < (g + 1) * cg; ++ch) {
            const coord_t gv = static_cast<coord_t>(gcol[(ch * 27 + k) * count + j]);
            if (gv == coord_t(0) || corners.inside == 0) continue;
            const scalar_t* x_plane = x_n + ch * plane;
            if (want_mask) grad_mod += gv * trilinear_value(x_plane, corners);
            coord_t d[3];
            trilinear_coord_grad(x_plane, corners, d);
            for (int a = 0; a < 3; ++a) grad_coord[a] += gv * m * d[a];
          }
          taps.add_tap_grad(acc, v, g, k, grad_coord, grad_mod);
        }
      }
      taps.finish_grad(acc, v);
    }
  });
}

// out (N × C_out × P) = W (C_out × C·27) · columns, chunk by chunk.
template <typename scalar_t, typename Taps>
void forward_impl(const at::Tensor& x, const Taps& taps, const at::Tensor& weight,
                  at::Tensor& out) {
  const ConvShape& s = taps.shape;
  const at::Tensor w2d = weight.reshape({s.out_channels, s.channels * 27});
  const at::Tensor out3d = out.view({s.batch, s.out_channels, s.out_plane()});
  const int64_t chunk = column_chunk(s, sizeof(scalar_t));
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  at::Tensor col = at::empty({s.channels * 27 * chunk}, x.options());
  for (int64_t n = 0; n < s.batch; ++n) {
    const scalar_t* x_n = x_data + n * s.channels * s.in_plane();
    for (int64_t p0 = 0; p0 < s.out_plane(); p0 += chunk) {
      const int64_t count = std::min(chunk, s.out_plane() - p0);
      at::Tensor cols = column_view(col, s, count);
      gather_columns(x_n, taps, n, p0, count, cols.data_ptr<scalar_t>());
      out3d[n].narrow(1, p0, count).copy_(at::mm(w2d, cols));
    }
  }
}

struct GradTargets {
  at::Tensor input;    // N×C×T×H×W zero-filled, or undefined
  at::Tensor weight;   // C_out × C·27 zero-filled, or undefined
  bool coordinates;    // the policy's coordinate or mask gradients are wanted
};

template <typename scalar_t, typename Taps>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& x, const Taps& taps,
                   const at::Tensor& weight, GradTargets& targets) {
  const ConvShape& s = taps.shape;
  const at::Tensor w2d = weight.reshape({s.out_channels, s.channels * 27});
  const at::Tensor w2d_t = w2d.t().contiguous();
  const at::Tensor gout3d = grad_out.view({s.batch, s.out_channels, s.out_plane()});
  const int64_t chunk = column_chunk(s, sizeof(scalar_t));
  const int64_t sample = s.channels * s.in_plane();
  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  at::Tensor col = at::empty({s.channels * 27 * chunk}, x.options());
  for (int64_t n = 0; n < s.batch; ++n) {
    const scalar_t* x_n = x_data + n * sample;
    for (int64_t p0 = 0; p0 < s.out_plane(); p0 += chunk) {
      const int64_t count = std::min(chunk, s.out_plane() - p0);
      const at::Tensor gout = gout3d[n].narrow(1, p0, count);
      if (targets.weight.defined()) {
        at::Tensor cols = column_view(col, s, count);
        gather_columns(x_n, taps, n, p0, count, cols.data_ptr<scalar_t>());
        targets.weight.addmm_(gout, cols.t());
      }
      if (!targets.input.defined() && !targets.coordinates) continue;
      const at::Tensor gcol = at::mm(w2d_t, gout);
      const scalar_t* gcol_data = gcol.const_data_ptr<scalar_t>();
      if (targets.input.defined()) {
        scatter_columns(gcol_data, taps, n, p0, count,
                        targets.input.data_ptr<scalar_t>() + n * sample);
      }
      if (targets.coordinates) coordinate_grads(gcol_data, x_n, taps, n, p0, count);
    }
  }
}

void check_cpu_dtype(const at::Tensor& input, const char* op) {
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, op,
              " on CPU supports float32 and float64, got ", input.scalar_type(),
              " (cast the inputs, or run on a CUDA device for float16/bfloat16)");
}

at::Tensor optional_contiguous(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

at::Tensor empty_output(const at::Tensor& input, const ConvShape& s) {
  return at::empty({s.batch, s.out_channels, s.out_depth, s.out_height, s.out_width},
                   input.options());
}

at::Tensor maybe_empty_like(bool wanted, const at::Tensor& like, const at::Tensor& input) {
  return wanted && like.defined() ? at::empty_like(like) : at::empty({0}, input.options());
}

at::Tensor d2conv3d_cpu(const at::Tensor& input, const at::Tensor& dilation_map,
                        const c10::optional<at::Tensor>& modulation, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation) {
  const ConvShape s = make_shape(input, weight, bias, stride, padding, dilation, 1);
  check_cpu_dtype(input, "d2conv3d");
  check_map(input, dilation_map, "dilation_map", 3, s);
  if (modulation.has_value()) check_map(input, *modulation, "modulation", 27, s);
  const at::Tensor x = input.contiguous(), dmap = dilation_map.contiguous(),
                   mod = optional_contiguous(modulation), w = weight.contiguous();
  at::Tensor out = empty_output(input, s);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "d2conv3d_cpu", [&] {
    using coord_t = at::opmath_type<scalar_t>;
    const DilationTaps<scalar_t, coord_t> taps{s, dmap.const_data_ptr<scalar_t>(),
                                               ptr_or_null<scalar_t>(mod), nullptr, nullptr};
    forward_impl<scalar_t>(x, taps, w, out);
  });
  if (bias.has_value()) out.add_(bias->view({1, -1, 1, 1, 1}));
  return out.contiguous(format_of(input));  // follow the input's memory format, as convs do
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> d2conv3d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& dilation_map,
    const c10::optional<at::Tensor>& modulation, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    std::array<bool, 4> output_mask) {
  const ConvShape s = make_shape(input, weight, c10::nullopt, stride, padding, dilation, 1);
  check_cpu_dtype(input, "d2conv3d");
  check_map(input, dilation_map, "dilation_map", 3, s);
  if (modulation.has_value()) check_map(input, *modulation, "modulation", 27, s);
  check_grad_output(grad_output, input, s);
  const at::Tensor x = input.contiguous(), dmap = dilation_map.contiguous(),
                   mod = optional_contiguous(modulation), w = weight.contiguous(),
                   gout = grad_output.contiguous();
  at::Tensor grad_dmap = maybe_empty_like(output_mask[1], dmap, input);
  at::Tensor grad_mod = maybe_empty_like(output_mask[2], mod, input);
  GradTargets targets{
      output_mask[0] ? at::zeros_like(x) : at::Tensor(),
      output_mask[3] ? at::zeros({s.out_channels, s.channels * 27}, x.options()) : at::Tensor(),
      grad_dmap.numel() > 0 || grad_mod.numel() > 0};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "d2conv3d_backward_cpu", [&] {
    using coord_t = at::opmath_type<scalar_t>;
    const DilationTaps<scalar_t, coord_t> taps{
        s, dmap.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(mod),
        mutable_or_null<scalar_t>(grad_dmap), mutable_or_null<scalar_t>(grad_mod)};
    backward_impl<scalar_t>(gout, x, taps, w, targets);
  });
  return {targets.input.defined() ? targets.input.contiguous(format_of(input))
                                  : at::empty({0}, input.options()),
          grad_dmap,
          grad_mod,
          targets.weight.defined() ? targets.weight.view(weight.sizes())
                                   : at::empty({0}, input.options())};
}

at::Tensor deform_conv3d_cpu(const at::Tensor& input, const at::Tensor& offset,
                             const c10::optional<at::Tensor>& mask, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t offset_groups) {
  const ConvShape s = make_shape(input, weight, bias, stride, padding, dilation, offset_groups);
  check_cpu_dtype(input, "deform_conv3d");
  check_map(input, offset, "offset", 3 * offset_groups * 27, s);
  if (mask.has_value()) check_map(input, *mask, "mask", offset_groups * 27, s);
  const at::Tensor x = input.contiguous(), off = offset.contiguous(),
                   msk = optional_contiguous(mask), w = weight.contiguous();
  at::Tensor out = empty_output(input, s);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv3d_cpu", [&] {
    using coord_t = at::opmath_type<scalar_t>;
    const DeformTaps<scalar_t, coord_t> taps{s, off.const_data_ptr<scalar_t>(),
                                             ptr_or_null<scalar_t>(msk), nullptr, nullptr};
    forward_impl<scalar_t>(x, taps, w, out);
  });
  if (bias.has_value()) out.add_(bias->view({1, -1, 1, 1, 1}));
  return out.contiguous(format_of(input));  // follow the input's memory format, as convs do
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv3d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
    const c10::optional<at::Tensor>& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t offset_groups,
    std::array<bool, 4> output_mask) {
  const ConvShape s =
      make_shape(input, weight, c10::nullopt, stride, padding, dilation, offset_groups);
  check_cpu_dtype(input, "deform_conv3d");
  check_map(input, offset, "offset", 3 * offset_groups * 27, s);
  if (mask.has_value()) check_map(input, *mask, "mask", offset_groups * 27, s);
  check_grad_output(grad_output, input, s);
  const at::Tensor x = input.contiguous(), off = offset.contiguous(),
                   msk = optional_contiguous(mask), w = weight.contiguous(),
                   gout = grad_output.contiguous();
  at::Tensor grad_off = maybe_empty_like(output_mask[1], off, input);
  at::Tensor grad_msk = maybe_empty_like(output_mask[2], msk, input);
  GradTargets targets{
      output_mask[0] ? at::zeros_like(x) : at::Tensor(),
      output_mask[3] ? at::zeros({s.out_channels, s.channels * 27}, x.options()) : at::Tensor(),
      grad_off.numel() > 0 || grad_msk.numel() > 0};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv3d_backward_cpu", [&] {
    using coord_t = at::opmath_type<scalar_t>;
    const DeformTaps<scalar_t, coord_t> taps{
        s, off.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(msk),
        mutable_or_null<scalar_t>(grad_off), mutable_or_null<scalar_t>(grad_msk)};
    backward_impl<scalar_t>(gout, x, taps, w, targets);
  });
  return {targets.input.defined() ? targets.input.contiguous(format_of(input))
                                  : at::empty({0}, input.options()),
          grad_off,
          grad_msk,
          targets.weight.defined() ? targets.weight.view(weight.sizes())
                                   : at::empty({0}, input.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(d2bench, CPU, m) {
  m.impl("d2conv3d", &d2conv3d_cpu);
  m.impl("d2conv3d_backward", &d2conv3d_backward_cpu);
  m.impl("deform_conv3d", &deform_conv3d_cpu);
  m.impl("deform_conv3d_backward", &deform_conv3d_backward_cpu);
}

}  // namespace d2bench
