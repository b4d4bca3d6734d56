// CUDA entry points of d2bench::d2conv3d and d2bench::deform_conv3d (forward and backward).
//
// Forward: a fused implicit-GEMM kernel, no im2col buffer; the weight is read in channels_last_3d
// order (a weight held that way is not copied). On Hopper, float16/bfloat16 calls with
// channels_last_3d input take the wgmma kernel of hopper_forward.cuh; other calls the mma.sync
// (16-bit) or SIMT (float32/float64) kernels of fused_forward.cuh.
// Backward: two implicit GEMMs whose sampled operand lives only in shared memory, so no column
// buffer exists. float16/bfloat16 with channels_last_3d input and ∂L/∂out take the tensor-core
// kernels of fused_backward.cuh; all other calls (float32, float64, other layouts) the CUDA-core
// kernels of simt_backward.cuh. Extra memory: none for float32/float64; for 16-bit types a
// float32 accumulator of a block of input channels, within the output's size. Both paths add
// the input gradient with float atomics, so PyTorch's deterministic mode raises; the other
// gradients are deterministic.
//
// Everything runs on the current stream of the input's device, with 64-bit indexing. Sampling
// coordinates are float32 or wider: for float16/bfloat16 inputs the maps may be float32.
//
// This file holds the entry points, checks and dispatch; the launchers (launchers.cuh) are
// compiled in the instantiate_*.cu files, one per (dtype, operator), in parallel.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "../checks.h"
#include "../kernel_policy.h"
#include "common.cuh"
#include "launch.h"

namespace d2bench {
namespace cuda {
namespace {

// Input, coordinate map and optional modulation, made packed and checked.
struct SamplingArgs {
  at::Tensor input, coords, mask, weight;
  ConvShape shape;
};

SamplingArgs prepare(const at::Tensor& input, const at::Tensor& coords,
                     const c10::optional<at::Tensor>& mask, const at::Tensor& weight,
                     const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                     const char* coords_name, int64_t coords_channels, const char* mask_name,
                     int64_t mask_channels) {
  const ConvShape s = make_shape(input, weight, bias, stride, padding, dilation, groups);
  check_map(input, coords, coords_name, coords_channels, s);
  if (mask.has_value()) {
    check_map(input, *mask, mask_name, mask_channels, s);
    TORCH_CHECK(mask->scalar_type() == coords.scalar_type(), mask_name, " has dtype ",
                mask->scalar_type(), " but ", coords_name, " has ", coords.scalar_type());
  }
  TORCH_CHECK(input.is_cuda(), "expected CUDA tensors");
  return SamplingArgs{packed_layout(input) ? input : input.contiguous(), coords.contiguous(),
                      mask.has_value() ? mask->contiguous() : at::Tensor(), weight, s};
}

// Whether the fused backward (fused_backward.cuh) serves this call: 16-bit types, the input
// and ∂L/∂out channels_last_3d (channels innermost, samples packed), and every run of 8 channels
// 16-byte aligned. Its input gradient goes through a float32 accumulator of
// kTensorCoreAccumulatorChannels channels of every input voxel; where that is larger than the
// output (fewer than 128 output channels at stride 1, or a strided layer), a call that wants the
// input gradient takes the CUDA-core backward (simt_backward.cuh), whose accumulator is sized
// within the output. So do all calls under the kernel policy's backward "cuda_core" (to compare
// the two). d2bench/ops/routing.py mirrors this decision in Python: change both together.
bool fused_backward_applies(const at::Tensor& x, const at::Tensor& gout, const ConvShape& s,
                            bool input_grad) {
  const auto t = x.scalar_type();
  if (kernel_policy().backward == BackwardKernel::cuda_core) return false;
  const int64_t accumulator_bytes = s.batch * s.in_plane() * kTensorCoreAccumulatorChannels *
                                    static_cast<int64_t>(sizeof(float));
  const int64_t output_bytes = s.batch * s.out_plane() * s.out_channels * x.element_size();
  if (input_grad && accumulator_bytes > output_bytes) return false;
  const Layout gl = Layout::of(gout);
  return (t == at::kHalf || t == at::kBFloat16) && Layout::of(x).channel == 1 &&
         gl.channel == 1 && gl.batch == s.out_plane() * gl.voxel && s.group_channels() % 8 == 0 &&
         s.out_channels % 8 == 0 && is_aligned(x, 16) && is_aligned(gout, 16);
}

void check_cuda_dtype(const at::Tensor& input, const char* op) {
  const auto t = input.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16, op,
              " on CUDA supports float16, bfloat16, float32 and float64, got ", t);
}

template <typename T>
struct Tag {
  using type = T;
};

template <template <typename, typename> class TapsT>
int64_t coords_channels(int64_t groups);
template <>
int64_t coords_channels<DilationTaps>(int64_t) {
  return 3;
}
template <>
int64_t coords_channels<DeformTaps>(int64_t groups) {
  return 3 * 27 * groups;
}

// Runs body(Tag<scalar_t>, Tag<map_t>) for the input dtype and the maps' dtype.
template <typename Body>
void dispatch(const at::Tensor& input, const at::Tensor& coords, Body&& body) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "d2bench", [&] {
    if constexpr (kReducedPrecision<scalar_t>) {
      if (coords.scalar_type() == at::kFloat) {
        body(Tag<scalar_t>{}, Tag<float>{});
        return;
      }
    }
    body(Tag<scalar_t>{}, Tag<scalar_t>{});
  });
}

template <template <typename, typename> class TapsT>
at::Tensor forward(const at::Tensor& input, const at::Tensor& coords,
                   const c10::optional<at::Tensor>& mask, const at::Tensor& weight,
                   const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                   const char* op, const char* coords_name, const char* mask_name) {
  check_cuda_dtype(input, op);
  const c10::cuda::CUDAGuard guard(input.device());
  SamplingArgs a = prepare(input, coords, mask, weight, bias, stride, padding, dilation, groups,
                           coords_name, coords_channels<TapsT>(groups), mask_name, 27 * groups);
  const ConvShape& s = a.shape;
  at::Tensor out = at::empty({s.batch, s.out_channels, s.out_depth, s.out_height, s.out_width},
                             input.options().memory_format(format_of(a.input)));
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  dispatch(a.input, a.coords, [&](auto scalar_tag, auto map_tag) {
    using scalar_t = typename decltype(scalar_tag)::type;
    using map_t = typename decltype(map_tag)::type;
    using Taps = TapsT<map_t, coord_type<scalar_t>>;
    const Taps taps{s, a.coords.const_data_ptr<map_t>(), ptr_or_null<map_t>(a.mask), nullptr,
                    nullptr};
    Launch<scalar_t, Taps>::forward(a.input, taps, a.weight, b, out);
  });
  return out;
}

template <template <typename, typename> class TapsT>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& coords,
    const c10::optional<at::Tensor>& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 4> output_mask, const char* op, const char* coords_name,
    const char* mask_name) {
  check_cuda_dtype(input, op);
  const c10::cuda::CUDAGuard guard(input.device());
  SamplingArgs a = prepare(input, coords, mask, weight, c10::nullopt, stride, padding, dilation,
                           groups, coords_name, coords_channels<TapsT>(groups), mask_name,
                           27 * groups);
  const ConvShape& s = a.shape;
  check_grad_output(grad_output, input, s);
  const at::Tensor gout = packed_layout(grad_output) ? grad_output : grad_output.contiguous();
  if (output_mask[0]) {
    at::globalContext().alertNotDeterministic(op);  // the input gradient uses atomics
  }
  const auto empty = at::empty({0}, input.options());
  const bool fused = fused_backward_applies(a.input, gout, s, output_mask[0]);
  const bool reduced = a.input.scalar_type() == at::kHalf || a.input.scalar_type() == at::kBFloat16;
  // Both backward paths add into the coordinate and modulation gradients (channel blocks, tap
  // or channel shares). For 16-bit inputs every element of the input gradient is written from
  // a float32 block accumulator; float32/float64 accumulate in place.
  const auto zeros_if = [&](bool wanted, const at::Tensor& like) {
    return wanted ? at::zeros_like(like) : empty;
  };
  at::Tensor grad_input = !output_mask[0] ? at::Tensor()
                          : reduced       ? at::empty_like(a.input)
                                          : at::zeros_like(a.input);
  at::Tensor grad_coords = zeros_if(output_mask[1], a.coords);
  at::Tensor grad_mask = zeros_if(output_mask[2] && a.mask.defined(), a.mask);
  const bool coordinates = grad_coords.numel() > 0 || grad_mask.numel() > 0;
  at::Tensor grad_weight = output_mask[3] ? at::empty(weight.sizes(), weight.options()) : empty;
  at::Tensor grad_w = output_mask[3] ? grad_weight : at::Tensor();
  dispatch(a.input, a.coords, [&](auto scalar_tag, auto map_tag) {
    using scalar_t = typename decltype(scalar_tag)::type;
    using map_t = typename decltype(map_tag)::type;
    using Taps = TapsT<map_t, coord_type<scalar_t>>;
    const Taps taps{s, a.coords.const_data_ptr<map_t>(), ptr_or_null<map_t>(a.mask),
                    mutable_or_null<map_t>(grad_coords), mutable_or_null<map_t>(grad_mask)};
    if (kReducedPrecision<scalar_t> && fused) {
      Launch<scalar_t, Taps>::tensor_core_backward(gout, a.input, taps, a.weight, grad_input,
                                                   grad_w, coordinates);
    } else {
      Launch<scalar_t, Taps>::cuda_core_backward(gout, a.input, taps, a.weight, grad_input,
                                                 grad_w, coordinates);
    }
  });
  return {grad_input.defined() ? grad_input : empty, grad_coords, grad_mask, grad_weight};
}

at::Tensor d2conv3d_cuda(const at::Tensor& input, const at::Tensor& dilation_map,
                         const c10::optional<at::Tensor>& modulation, const at::Tensor& weight,
                         const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation) {
  return forward<DilationTaps>(input, dilation_map, modulation, weight, bias, stride, padding,
                               dilation, 1, "d2conv3d_cuda", "dilation_map", "modulation");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> d2conv3d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& dilation_map,
    const c10::optional<at::Tensor>& modulation, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    std::array<bool, 4> output_mask) {
  return backward<DilationTaps>(grad_output, input, dilation_map, modulation, weight, stride,
                                padding, dilation, 1, output_mask, "d2conv3d_backward_cuda",
                                "dilation_map", "modulation");
}

at::Tensor deform_conv3d_cuda(const at::Tensor& input, const at::Tensor& offset,
                              const c10::optional<at::Tensor>& mask, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation,
                              int64_t offset_groups) {
  return forward<DeformTaps>(input, offset, mask, weight, bias, stride, padding, dilation,
                             offset_groups, "deform_conv3d_cuda", "offset", "mask");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv3d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
    const c10::optional<at::Tensor>& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t offset_groups,
    std::array<bool, 4> output_mask) {
  return backward<DeformTaps>(grad_output, input, offset, mask, weight, stride, padding,
                              dilation, offset_groups, output_mask,
                              "deform_conv3d_backward_cuda", "offset", "mask");
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(d2bench, CUDA, m) {
  m.impl("d2conv3d", &cuda::d2conv3d_cuda);
  m.impl("d2conv3d_backward", &cuda::d2conv3d_backward_cuda);
  m.impl("deform_conv3d", &cuda::deform_conv3d_cuda);
  m.impl("deform_conv3d_backward", &cuda::deform_conv3d_backward_cuda);
}

}  // namespace d2bench
